"""The event outbox (`outbox_events`), keyed by event_id (`<leg>:<seq>`): store, fetch the
unpublished ones oldest first, mark published, count, purge; and the crash-recovery reads.

The only outbox SQL: workers.events turns rows into stream events and back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, Text, any_, bindparam, cast, func, literal, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from models.bulk_insert import insert_rows
from models.executor import Executor, connection_of, count
from models.outbox import OutboxEvent

_outbox: Table = OutboxEvent.__table__  # type: ignore[assignment]
_worker_key = OutboxEvent.payload["worker"].as_string()
_leg_key = OutboxEvent.payload["leg_id"].as_string()


def insert_outbox_rows(session: Executor, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store rows (trunk, event_id, payload) unpublished; an event_id stored before keeps its
    first row (ON CONFLICT DO NOTHING). Returns how many were new."""
    return insert_rows(connection_of(session), "outbox_events", rows)


def _unpublished(statement: Any, trunk: str | None, workers: Sequence[str] | None) -> Any:
    statement = statement.where(OutboxEvent.published_at.is_(None))
    if trunk is not None:
        statement = statement.where(OutboxEvent.trunk == trunk)
    if workers is not None:
        statement = statement.where(_worker_key.in_(list(workers)))
    return statement


def fetch_unpublished(
    session: Session, limit: int, *, trunk: str | None = None,
    workers: Sequence[str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The oldest unpublished rows as (event_id, payload), oldest first."""
    statement = _unpublished(select(OutboxEvent.event_id, OutboxEvent.payload), trunk, workers)
    rows = session.execute(statement.order_by(OutboxEvent.id).limit(limit)).all()
    return [(event_id, payload) for event_id, payload in rows]


def count_unpublished(
    session: Session, *, trunk: str | None = None, workers: Sequence[str] | None = None
) -> int:
    statement = _unpublished(select(func.count()).select_from(OutboxEvent), trunk, workers)
    return int(session.execute(statement).scalar_one())


_MARK_BY_EVENT_ID_PG = (
    update(_outbox)
    .where(
        _outbox.c.event_id == any_(bindparam("p_ids", type_=postgresql.ARRAY(Text))),
        _outbox.c.published_at.is_(None),
    )
    .values(published_at=bindparam("p_at", type_=_outbox.c.published_at.type))
)


def mark_published(session: Executor, event_ids: Sequence[str]) -> int:
    """Mark outbox rows published by event_id (one array parameter on PostgreSQL)."""
    if not event_ids:
        return 0
    connection = connection_of(session)
    at = datetime.now(UTC)
    if connection.dialect.name == "postgresql":
        statement: Any = _MARK_BY_EVENT_ID_PG
        params: dict[str, Any] = {"p_ids": list(event_ids), "p_at": at}
    else:
        statement = (
            update(_outbox)
            .where(_outbox.c.event_id.in_(list(event_ids)), _outbox.c.published_at.is_(None))
            .values(published_at=at)
        )
        params = {}
    return count(connection.execute(statement, params).rowcount)


def purge_published(session: Executor, before: datetime) -> int:
    statement = _outbox.delete().where(_outbox.c.published_at < before)
    return count(connection_of(session).execute(statement).rowcount)


def last_event_seqs(session: Session, leg_ids: Sequence[str]) -> dict[str, int]:
    """The highest stored event seq of each leg (legs without events are left out)."""
    if not leg_ids:
        return {}
    seq = OutboxEvent.payload["seq"].as_integer()
    statement = select(_leg_key, func.max(seq)).where(_leg_key.in_(list(leg_ids)))
    return {
        str(leg_id): int(top) for leg_id, top in session.execute(statement.group_by(_leg_key))
    }


def retag_unpublished(session: Session, dead: str, rescuer: str) -> None:
    """Hand a dead worker's unpublished rows to `rescuer` (they go out first, in order)."""
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None), _worker_key == dead)
        .values(payload=OutboxEvent.payload.op("||")(
            func.jsonb_build_object(cast(literal("worker"), Text), cast(literal(rescuer), Text))
        ))
        .execution_options(synchronize_session=False)
    )


def payloads_of_legs(session: Session, leg_ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(leg_id, payload) of every stored event of these legs, oldest first."""
    statement = select(_leg_key, OutboxEvent.payload).where(_leg_key.in_(list(leg_ids)))
    return [(leg, payload) for leg, payload in session.execute(statement.order_by(OutboxEvent.id))]
