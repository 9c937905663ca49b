"""CDR outcome and routing: typed outcome, attempt number, targets tried, 3xx followed, next trunk.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OUTCOMES = ("user", "network", "capacity", "config", "policy")


def upgrade() -> None:
    op.add_column("cdrs", sa.Column("outcome", sa.Text(), nullable=True))
    op.add_column("cdrs", sa.Column("attempt", sa.Integer(), server_default="1",
                                    nullable=False))
    op.add_column("cdrs", sa.Column("routed_via", sa.Text(), nullable=True))
    op.add_column("cdrs", sa.Column("next_trunk", sa.Text(), nullable=True))
    op.add_column("cdrs", sa.Column("redirects", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_cdrs_outcome"), "cdrs",
        "outcome IS NULL OR outcome IN ({})".format(", ".join(f"'{o}'" for o in OUTCOMES)),
    )
    op.create_check_constraint(op.f("ck_cdrs_attempt_positive"), "cdrs", "attempt >= 1")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_cdrs_attempt_positive"), "cdrs", type_="check")
    op.drop_constraint(op.f("ck_cdrs_outcome"), "cdrs", type_="check")
    for column in ("redirects", "next_trunk", "routed_via", "attempt", "outcome"):
        op.drop_column("cdrs", column)
