"""The PostgreSQL outbox of stream events: rows from events and back (the SQL is
models.outbox_ops), and `PostgresOutbox`, the publisher's outbox for one worker's events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from models import outbox_ops
from models.outbox_ops import count_unpublished, last_event_seqs
from models.repository import Repository
from workers.events.entries import StreamEvent

__all__ = [
    "PostgresOutbox", "count_unpublished", "fetch_unpublished", "insert_outbox",
    "last_event_seqs", "mark_published", "outbox_rows",
]

mark_published = outbox_ops.mark_published


def outbox_rows(
    events: Sequence[StreamEvent],
    worker: str,
    extras: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for index, event in enumerate(events):
        payload = {**event.to_json(), "worker": worker}
        extra = extras[index] if extras is not None else None
        if extra:
            payload.update(extra)
        rows.append({"trunk": event.trunk, "event_id": event.event_id, "payload": payload})
    return rows


def insert_outbox(
    session: Session | Connection,
    events: Sequence[StreamEvent],
    worker: str,
    extras: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[Any]:
    """Store events unpublished; returns each event's outbox key (its event_id).

    `extras` adds keys to each row's payload (the dialog state for crash recovery); the
    stream entry itself never carries them. An event_id stored before keeps its first row
    (ON CONFLICT DO NOTHING) and is published again: consumers drop repeats by event_id.
    One statement, no RETURNING: the key is known without asking.
    """
    if not events:
        return []
    outbox_ops.insert_outbox_rows(session, outbox_rows(events, worker, extras))
    return [event.event_id for event in events]


def fetch_unpublished(
    session: Session, limit: int, *, trunk: str | None, workers: Sequence[str] | None
) -> list[tuple[str, StreamEvent]]:
    """The oldest unpublished events as (outbox key = event_id, event)."""
    rows = outbox_ops.fetch_unpublished(session, limit, trunk=trunk, workers=workers)
    return [(event_id, StreamEvent.from_json(payload)) for event_id, payload in rows]


class PostgresOutbox:
    """The `outbox_events` rows of some workers (default: one) on one trunk, oldest first.

    Keys are event_ids. With `defer_marks`, `mark_published` only remembers the keys: the
    worker's recorder writes them in its next batch transaction (`take_marks`), or on its own
    when idle (`apply_marks`), which saves a transaction per batch. A crash before they are
    written publishes those events again (consumers drop repeats by event_id); `fetch` writes
    them first, so the outbox never hands back an event it knows is published.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        trunk: str | None,
        workers: Sequence[str] | None,
        defer_marks: bool = False,
    ) -> None:
        self._repository = repository
        self._trunk = trunk
        self._workers = list(workers) if workers is not None else None
        self._worker = self._workers[0] if self._workers else "unknown"
        self._defer_marks = defer_marks
        self._unmarked: list[str] = []

    def add(self, events: Sequence[StreamEvent]) -> list[Any]:
        return self._repository.run_connection(insert_outbox, events, self._worker)

    def fetch(self, limit: int) -> list[tuple[Any, StreamEvent]]:
        self.apply_marks()
        rows: list[tuple[Any, StreamEvent]] = self._repository.run(
            fetch_unpublished, limit, trunk=self._trunk, workers=self._workers
        )
        return rows

    def mark_published(self, keys: Sequence[Any]) -> None:
        ids = [key for key in keys if key is not None]
        if not ids:
            return
        if self._defer_marks:
            self._unmarked.extend(ids)
        else:
            self._repository.run_connection(mark_published, ids)

    def take_marks(self) -> list[str]:
        """The published keys not yet written (the caller writes them or gives them back)."""
        marks, self._unmarked = self._unmarked, []
        return marks

    def give_back_marks(self, marks: Sequence[str]) -> None:
        self._unmarked[:0] = marks

    def apply_marks(self) -> None:
        """Write the remembered marks now, in a transaction of their own."""
        marks = self.take_marks()
        if not marks:
            return
        try:
            self._repository.run_connection(mark_published, marks)
        except Exception:
            self.give_back_marks(marks)
            raise

    def pending(self) -> int:
        self.apply_marks()
        return int(
            self._repository.run(count_unpublished, trunk=self._trunk, workers=self._workers)
        )
