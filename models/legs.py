"""The `legs` table: one row per dial attempt, its state, owner and the dialog state to end it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, Text, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JsonDocument, TextEnum, Timestamp, enum_check
from models.enums import LegState
from sipstack.dial import Scenario
from sipstack.transport import Transport

# Keep in step with models.enums.TERMINAL_STATES; written out because it is index DDL.
LIVE_LEG_CONDITION = "state NOT IN ('ended', 'failed')"


class Leg(Base):
    """A dial attempt from the scheduler's request to its end.

    `correlation_id` is the scheduler's idempotency key: unique among live legs (partial unique
    index), so a repeated request finds the existing leg instead of dialing twice.
    """

    __tablename__ = "legs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    correlation_id: Mapped[str] = mapped_column(Text)
    scenario: Mapped[Scenario] = mapped_column(TextEnum(Scenario))
    script_id: Mapped[str] = mapped_column(Text, server_default="")
    trunk: Mapped[str] = mapped_column(Text)
    request_uri: Mapped[str] = mapped_column(Text)
    signaling_addr: Mapped[str] = mapped_column(Text, server_default="")
    caller_user: Mapped[str] = mapped_column(Text, server_default="")
    caller_display_name: Mapped[str] = mapped_column(Text, server_default="")
    # The whole validated request (models.dial_fields.DialFields.to_json()), to rebuild it.
    request: Mapped[dict[str, Any]] = mapped_column(JsonDocument)

    state: Mapped[LegState] = mapped_column(
        TextEnum(LegState), server_default=LegState.QUEUED.value
    )
    owner_worker: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Dialog state: enough for another process to send BYE (or CANCEL) after a crash.
    call_id: Mapped[str | None] = mapped_column(Text)
    local_tag: Mapped[str | None] = mapped_column(Text)
    remote_tag: Mapped[str | None] = mapped_column(Text)
    local_cseq: Mapped[int | None] = mapped_column(Integer)
    invite_branch: Mapped[str | None] = mapped_column(Text)
    remote_target: Mapped[str | None] = mapped_column(Text)
    route_set: Mapped[list[str] | None] = mapped_column(JsonDocument)
    transport: Mapped[Transport | None] = mapped_column(TextEnum(Transport))
    peer_addr: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    claimed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    invited_at: Mapped[datetime | None] = mapped_column(Timestamp)
    first_provisional_at: Mapped[datetime | None] = mapped_column(Timestamp)
    answered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        enum_check("state", LegState),
        enum_check("scenario", Scenario),
        enum_check("transport", Transport, nullable=True),
        CheckConstraint("correlation_id <> ''", name="correlation_id_not_empty"),
        CheckConstraint(
            "last_status_code IS NULL OR last_status_code BETWEEN 100 AND 699",
            name="last_status_code_range",
        ),
        Index(
            "uq_legs_live_correlation_id",
            "correlation_id",
            unique=True,
            postgresql_where=text(LIVE_LEG_CONDITION),
            sqlite_where=text(LIVE_LEG_CONDITION),
        ),
        Index("ix_legs_correlation_id", "correlation_id"),
        Index("ix_legs_call_id", "call_id"),
        Index(
            "ix_legs_live_owner_worker",
            "owner_worker",
            "state",
            postgresql_where=text(LIVE_LEG_CONDITION),
            sqlite_where=text(LIVE_LEG_CONDITION),
        ),
        Index("ix_legs_trunk_created_at", "trunk", "created_at"),
        Index("ix_legs_created_at", "created_at"),
    )

    def __repr__(self) -> str:
        return (
            f"Leg(id={self.id}, correlation_id={self.correlation_id!r}, "
            f"state={self.state}, owner={self.owner_worker!r})"
        )
