"""Initial schema: legs, cdrs, outbox_events and the CDR report views.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LIVE_LEG = "state NOT IN ('ended', 'failed')"
SCENARIOS = "'campaign', 'transfer_agent', 'callback', 'manual'"
LEG_STATES = (
    "'queued', 'claimed', 'inviting', 'ringing', 'early', 'established', 'terminating', "
    "'ended', 'failed'"
)
DISPOSITIONS = ("answered", "busy", "no_answer", "cancelled", "rejected", "failed", "congestion")
HANGUP_REASONS = ("normal", "user_hangup", "timer_expired", "error")


def _jsonb() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "legs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=False),
        sa.Column("scenario", sa.Text(), nullable=False),
        sa.Column("script_id", sa.Text(), server_default="", nullable=False),
        sa.Column("trunk", sa.Text(), nullable=False),
        sa.Column("request_uri", sa.Text(), nullable=False),
        sa.Column("signaling_addr", sa.Text(), server_default="", nullable=False),
        sa.Column("caller_user", sa.Text(), server_default="", nullable=False),
        sa.Column("caller_display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("request", _jsonb(), nullable=False),
        sa.Column("state", sa.Text(), server_default="queued", nullable=False),
        sa.Column("owner_worker", sa.Text(), nullable=True),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("call_id", sa.Text(), nullable=True),
        sa.Column("local_tag", sa.Text(), nullable=True),
        sa.Column("remote_tag", sa.Text(), nullable=True),
        sa.Column("local_cseq", sa.Integer(), nullable=True),
        sa.Column("invite_branch", sa.Text(), nullable=True),
        sa.Column("remote_target", sa.Text(), nullable=True),
        sa.Column("route_set", _jsonb(), nullable=True),
        sa.Column("transport", sa.Text(), nullable=True),
        sa.Column("peer_addr", sa.Text(), nullable=True),
        sa.Column("created_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("claimed_at", _timestamp(), nullable=True),
        sa.Column("invited_at", _timestamp(), nullable=True),
        sa.Column("first_provisional_at", _timestamp(), nullable=True),
        sa.Column("answered_at", _timestamp(), nullable=True),
        sa.Column("ended_at", _timestamp(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legs")),
        sa.CheckConstraint(f"state IN ({LEG_STATES})", name=op.f("ck_legs_state")),
        sa.CheckConstraint(f"scenario IN ({SCENARIOS})", name=op.f("ck_legs_scenario")),
        sa.CheckConstraint(
            "transport IS NULL OR transport IN ('udp', 'tcp', 'tls')",
            name=op.f("ck_legs_transport"),
        ),
        sa.CheckConstraint("correlation_id <> ''", name=op.f("ck_legs_correlation_id_not_empty")),
        sa.CheckConstraint(
            "last_status_code IS NULL OR last_status_code BETWEEN 100 AND 699",
            name=op.f("ck_legs_last_status_code_range"),
        ),
    )
    op.create_index(
        "uq_legs_live_correlation_id",
        "legs",
        ["correlation_id"],
        unique=True,
        postgresql_where=sa.text(LIVE_LEG),
        sqlite_where=sa.text(LIVE_LEG),
    )
    op.create_index("ix_legs_correlation_id", "legs", ["correlation_id"])
    op.create_index("ix_legs_call_id", "legs", ["call_id"])
    op.create_index(
        "ix_legs_live_owner_worker",
        "legs",
        ["owner_worker", "state"],
        postgresql_where=sa.text(LIVE_LEG),
        sqlite_where=sa.text(LIVE_LEG),
    )
    op.create_index("ix_legs_trunk_created_at", "legs", ["trunk", "created_at"])
    op.create_index("ix_legs_created_at", "legs", ["created_at"])

    op.create_table(
        "cdrs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("leg_id", sa.Uuid(), nullable=True),
        sa.Column("correlation_id", sa.Text(), nullable=False),
        sa.Column("scenario", sa.Text(), nullable=False),
        sa.Column("trunk", sa.Text(), nullable=False),
        sa.Column("from_uri", sa.Text(), nullable=False),
        sa.Column("to_uri", sa.Text(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("first_provisional_at", _timestamp(), nullable=True),
        sa.Column("answered_at", _timestamp(), nullable=True),
        sa.Column("ended_at", _timestamp(), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("billsec", sa.Integer(), nullable=False),
        sa.Column("final_status_code", sa.Integer(), nullable=True),
        sa.Column("disposition", sa.Text(), nullable=False),
        sa.Column("hangup_reason", sa.Text(), nullable=False),
        sa.Column("hangup_by", sa.Text(), nullable=False),
        sa.Column("reason_protocol", sa.Text(), nullable=True),
        sa.Column("reason_cause", sa.Integer(), nullable=True),
        sa.Column("reason_text", sa.Text(), nullable=True),
        sa.Column("codec", sa.Text(), nullable=True),
        sa.Column("srtp", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.Text(), nullable=False),
        sa.Column("recorded_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdrs")),
        sa.UniqueConstraint("call_id", name=op.f("uq_cdrs_call_id")),
        sa.CheckConstraint(f"scenario IN ({SCENARIOS})", name=op.f("ck_cdrs_scenario")),
        sa.CheckConstraint(
            "disposition IN ({})".format(", ".join(f"'{d}'" for d in DISPOSITIONS)),
            name=op.f("ck_cdrs_disposition"),
        ),
        sa.CheckConstraint(
            "hangup_reason IN ({})".format(", ".join(f"'{r}'" for r in HANGUP_REASONS)),
            name=op.f("ck_cdrs_hangup_reason"),
        ),
        sa.CheckConstraint("hangup_by IN ('local', 'remote')", name=op.f("ck_cdrs_hangup_by")),
        sa.CheckConstraint("call_id <> ''", name=op.f("ck_cdrs_call_id_not_empty")),
        sa.CheckConstraint(
            "duration_ms >= 0 AND billsec >= 0", name=op.f("ck_cdrs_durations_not_negative")
        ),
        sa.CheckConstraint(
            "final_status_code IS NULL OR final_status_code BETWEEN 100 AND 699",
            name=op.f("ck_cdrs_final_status_code_range"),
        ),
    )
    op.create_index("ix_cdrs_started_at", "cdrs", ["started_at"])
    op.create_index("ix_cdrs_trunk_started_at", "cdrs", ["trunk", "started_at"])
    op.create_index("ix_cdrs_scenario_started_at", "cdrs", ["scenario", "started_at"])
    op.create_index("ix_cdrs_correlation_id", "cdrs", ["correlation_id"])
    op.create_index("ix_cdrs_leg_id", "cdrs", ["leg_id"])

    op.create_table(
        "outbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("trunk", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("payload", _jsonb(), nullable=False),
        sa.Column("created_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_events_event_id")),
    )
    op.create_index(
        "ix_outbox_events_unpublished",
        "outbox_events",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )

    if op.get_context().dialect.name == "postgresql":
        for name, key in REPORT_VIEWS.items():
            op.execute(f"CREATE VIEW {name} AS {_report_select(key)}")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in REPORT_VIEWS:
            op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index("ix_outbox_events_unpublished", table_name="outbox_events")
    op.drop_table("outbox_events")
    for index in (
        "ix_cdrs_leg_id",
        "ix_cdrs_correlation_id",
        "ix_cdrs_scenario_started_at",
        "ix_cdrs_trunk_started_at",
        "ix_cdrs_started_at",
    ):
        op.drop_index(index, table_name="cdrs")
    op.drop_table("cdrs")
    for index in (
        "ix_legs_created_at",
        "ix_legs_trunk_created_at",
        "ix_legs_live_owner_worker",
        "ix_legs_call_id",
        "ix_legs_correlation_id",
        "uq_legs_live_correlation_id",
    ):
        op.drop_index(index, table_name="legs")
    op.drop_table("legs")


# --- report views -----------------------------------------------------------------------------
# The same figures as `outbound report` (models/reporting.py), frozen here as SQL so that a
# later change to the Python cannot silently change what a view means; tests compare the two.

REPORT_VIEWS = {
    "cdr_report_total": None,
    "cdr_report_by_trunk": "trunk",
    "cdr_report_by_scenario": "scenario",
    "cdr_report_by_hour": "hour",
    "cdr_report_by_day": "day",
}

_GROUP_COLUMNS = {
    "trunk": "trunk",
    "scenario": "scenario",
    # UTC hours and days (date_bin needs PostgreSQL 14 or later).
    "hour": "date_bin(INTERVAL '1 hour', started_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    "day": "date_bin(INTERVAL '1 day', started_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
}
_GROUP_NAMES = {"trunk": "trunk", "scenario": "scenario", "hour": "period", "day": "period"}


def _report_select(key: str | None) -> str:
    """Read each CDR once into (group, disposition, hangup_reason) counts, then the figures."""
    group = "" if key is None else f"{_GROUP_COLUMNS[key]} AS grp, "
    inner = (
        f"SELECT {group}disposition, hangup_reason, count(*) AS n, sum(billsec) AS billsec,"
        " sum(first_provisional_at - started_at) AS pdd_sum,"
        " count(first_provisional_at) AS pdd_n"
        f" FROM cdrs GROUP BY {'grp, ' if key else ''}disposition, hangup_reason"
    )

    def calls(condition: str) -> str:
        return f"coalesce(sum(n) FILTER (WHERE {condition}), 0)"

    attempts = "coalesce(sum(n), 0)"
    answered = calls("disposition = 'answered'")
    effective = calls("disposition IN ('answered', 'busy', 'no_answer', 'rejected')")
    measures = [
        f"{attempts} AS attempts",
        f"{answered} AS answered",
        f"{answered}::float8 / NULLIF({attempts}, 0)::float8 AS asr",
        f"sum(billsec)::float8 / NULLIF({answered}, 0)::float8 AS acd_seconds",
        f"{effective}::float8 / NULLIF({attempts}, 0)::float8 AS ner",
        "EXTRACT(EPOCH FROM sum(pdd_sum))::float8 * 1000 / NULLIF(sum(pdd_n), 0)::float8"
        " AS mean_pdd_ms",
        "coalesce(sum(billsec), 0) AS billsec_total",
    ]
    for value in DISPOSITIONS:
        measures.append(calls(f"disposition = '{value}'") + f" AS disposition_{value}")
    for value in HANGUP_REASONS:
        measures.append(calls(f"hangup_reason = '{value}'") + f" AS hangup_{value}")
    if key is None:
        return f"SELECT {', '.join(measures)} FROM ({inner}) AS per_outcome"
    return (
        f"SELECT grp AS {_GROUP_NAMES[key]}, {', '.join(measures)}"
        f" FROM ({inner}) AS per_outcome GROUP BY grp"
    )
