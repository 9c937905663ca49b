"""The `cdrs` table: exactly one call detail record per ended leg, written once, never updated."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    Text,
    Uuid,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TextEnum, Timestamp, enum_check
from models.times import optional_datetime, to_datetime
from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.dial import Scenario
from sipstack.outcome import Outcome


class Cdr(Base):
    """One ended leg. `call_id` is unique: a second write of the same leg is a no-op.

    Only checks that cannot refuse a CDR the core may legitimately produce are declared here:
    a refused CDR would be a lost one.
    """

    __tablename__ = "cdrs"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    call_id: Mapped[str] = mapped_column(Text, unique=True)
    # No foreign key on purpose: legs may be purged, and a CDR is never updated afterwards
    # (ON DELETE SET NULL would update it) nor ever refused for a dangling reference.
    leg_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    correlation_id: Mapped[str] = mapped_column(Text)
    scenario: Mapped[Scenario] = mapped_column(TextEnum(Scenario))
    trunk: Mapped[str] = mapped_column(Text)
    from_uri: Mapped[str] = mapped_column(Text)
    to_uri: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    first_provisional_at: Mapped[datetime | None] = mapped_column(Timestamp)
    answered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    ended_at: Mapped[datetime] = mapped_column(Timestamp)
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    billsec: Mapped[int] = mapped_column(Integer)
    final_status_code: Mapped[int | None] = mapped_column(Integer)
    disposition: Mapped[Disposition] = mapped_column(TextEnum(Disposition))
    hangup_reason: Mapped[HangupReason] = mapped_column(TextEnum(HangupReason))
    hangup_by: Mapped[HangupBy] = mapped_column(TextEnum(HangupBy))
    reason_protocol: Mapped[str | None] = mapped_column(Text)
    reason_cause: Mapped[int | None] = mapped_column(Integer)
    reason_text: Mapped[str | None] = mapped_column(Text)
    codec: Mapped[str | None] = mapped_column(Text)
    srtp: Mapped[bool] = mapped_column(Boolean, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str] = mapped_column(Text)
    # Typed outcome (sipstack.outcome; NULL only on CDRs stored before it existed), the
    # attempt number of the correlation id, the targets tried (`udp:host:port` in order),
    # the trunk the call was handed to next (NULL: the correlation id's last leg), and the
    # 3xx Contacts followed (space-separated URIs in order, RFC 3261 §8.1.3.4; NULL: none).
    outcome: Mapped[Outcome | None] = mapped_column(TextEnum(Outcome))
    attempt: Mapped[int] = mapped_column(Integer, server_default="1")
    routed_via: Mapped[str | None] = mapped_column(Text)
    next_trunk: Mapped[str | None] = mapped_column(Text)
    redirects: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        enum_check("scenario", Scenario),
        enum_check("disposition", Disposition),
        enum_check("hangup_reason", HangupReason),
        enum_check("hangup_by", HangupBy),
        enum_check("outcome", Outcome, nullable=True),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        CheckConstraint("call_id <> ''", name="call_id_not_empty"),
        CheckConstraint("duration_ms >= 0 AND billsec >= 0", name="durations_not_negative"),
        CheckConstraint(
            "final_status_code IS NULL OR final_status_code BETWEEN 100 AND 699",
            name="final_status_code_range",
        ),
        # Report queries: a time range, optionally narrowed to a trunk or a scenario.
        Index("ix_cdrs_started_at", "started_at"),
        Index("ix_cdrs_trunk_started_at", "trunk", "started_at"),
        Index("ix_cdrs_scenario_started_at", "scenario", "started_at"),
        Index("ix_cdrs_correlation_id", "correlation_id"),
        Index("ix_cdrs_leg_id", "leg_id"),
    )


def cdr_row(
    record: CdrRecord, *, worker: str, leg_id: uuid.UUID | None = None,
    outcome: Outcome | None = None, attempt: int = 1, routed_via: str | None = None,
    next_trunk: str | None = None,
) -> dict[str, Any]:
    """The `cdrs` column values for a core CdrRecord (properties computed once, here)."""
    return {
        "call_id": record.call_id,
        "leg_id": leg_id,
        "correlation_id": record.correlation_id,
        "scenario": record.scenario,
        "trunk": record.trunk,
        "from_uri": record.from_uri,
        "to_uri": record.to_uri,
        "started_at": to_datetime(record.started_at),
        "first_provisional_at": optional_datetime(record.first_provisional_at),
        "answered_at": optional_datetime(record.answered_at),
        "ended_at": to_datetime(record.ended_at),
        "duration_ms": record.duration_ms,
        "billsec": record.billsec,
        "final_status_code": record.final_status_code,
        "disposition": record.disposition,
        "hangup_reason": record.hangup_reason,
        "hangup_by": record.hangup_by,
        "reason_protocol": record.reason_protocol,
        "reason_cause": record.reason_cause,
        "reason_text": record.reason_text,
        "codec": record.codec,
        "srtp": record.srtp,
        "error": record.error,
        "worker": worker,
        "outcome": outcome,
        "attempt": attempt,
        "routed_via": routed_via,
        "next_trunk": next_trunk,
        "redirects": " ".join(record.redirects) or None,
    }
