"""The `outbox_events` table: lifecycle events waiting to be published to a Redis stream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JsonDocument, Timestamp


class OutboxEvent(Base):
    """An event to publish on `outbound:events:<trunk>`; `event_id` (`<leg>:<seq>`) is unique."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    trunk: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(Text, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        Index(
            "ix_outbox_events_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )
