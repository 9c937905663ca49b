"""DialEvents on Redis streams: the entry format, the publisher with its outbox, and the reader.

Delivery is at least once. An event is appended with `XADD {prefix}:events:{trunk} MAXLEN ~ N`;
when Redis does not answer, the event goes to an outbox (PostgreSQL, or a bounded in-memory
buffer when PostgreSQL is down too) and everything after it follows it there, so a leg's events
always reach the stream in order. Once Redis answers again the outbox is published in order and
only then does publishing go direct again. A retried publish may append an entry twice; the
`event_id` (`<leg>:<seq>`) is the key to drop repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
import tenacity
from sqlalchemy import Connection, Text, any_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from models import operations
from models.outbox import OutboxEvent
from models.repository import Repository
from workers.config.settings import Settings

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"failed", "cancelled", "ended"})
STREAM_FIELDS = (
    "event_id", "seq", "state", "call_id", "correlation_id", "scenario", "trunk",
    "status_code", "reason", "at",
)
OUTCOME_FIELDS = (
    "disposition", "hangup_reason", "hangup_by", "final_status_code", "reason_protocol",
    "reason_cause", "reason_text", "retry_after",
)
# Errors that mean "Redis is not there right now", as opposed to a bad command.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    ConnectionError,
    OSError,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """One DialEvent as it appears on the stream."""

    trunk: str
    leg_id: str
    seq: int
    state: str
    call_id: str
    correlation_id: str
    scenario: str
    status_code: int | None = None
    reason: str = ""
    at: float = 0.0
    # How the call ended (terminal events only; sipstack.cdr.Outcome.as_text): disposition,
    # hangup_reason, hangup_by, final_status_code, reason_protocol, reason_cause, reason_text,
    # retry_after (seconds of a 503/429 Retry-After, for workers.coordination.backpressure).
    outcome: dict[str, str] | None = None

    @property
    def event_id(self) -> str:
        return f"{self.leg_id}:{self.seq}"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def fields(self) -> dict[str, str]:
        """The stream entry: every value as text (an absent status code is empty)."""
        return {
            "event_id": self.event_id,
            "seq": str(self.seq),
            "state": self.state,
            "call_id": self.call_id,
            "correlation_id": self.correlation_id,
            "scenario": self.scenario,
            "trunk": self.trunk,
            "status_code": "" if self.status_code is None else str(self.status_code),
            "reason": self.reason,
            "at": format_at(self.at),
            **(self.outcome or {}),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "trunk": self.trunk, "leg_id": self.leg_id, "seq": self.seq, "state": self.state,
            "call_id": self.call_id, "correlation_id": self.correlation_id,
            "scenario": self.scenario, "status_code": self.status_code, "reason": self.reason,
            "at": self.at, "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamEvent:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> StreamEvent:
        """Read a stream entry back (what a consumer gets from XREAD)."""
        leg_id, _, seq = fields["event_id"].rpartition(":")
        status = fields.get("status_code", "")
        return cls(
            trunk=fields.get("trunk", ""),
            leg_id=leg_id,
            seq=int(fields.get("seq") or seq),
            state=fields["state"],
            call_id=fields.get("call_id", ""),
            correlation_id=fields.get("correlation_id", ""),
            scenario=fields.get("scenario", ""),
            status_code=int(status) if status else None,
            reason=fields.get("reason", ""),
            at=parse_at(fields.get("at", "")),
            outcome={name: fields[name] for name in OUTCOME_FIELDS if name in fields} or None,
        )


def format_at(at: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds ('2024-05-01T10:00:00.123456Z')."""
    # isoformat is twice as fast as strftime; "+00:00" is always the last six characters
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_at(text: str) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def decode_fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


class StreamWriter:
    """Appends events to their trunk's stream in one pipelined round trip."""

    def __init__(self, client: redis.Redis[Any], settings: Settings) -> None:
        self._redis = client
        self._settings = settings

    def write(self, events: Sequence[StreamEvent]) -> None:
        if not events:
            return
        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(
                self._settings.events_stream(event.trunk),
                event.fields(),
                maxlen=self._settings.events_maxlen,
                approximate=True,
            )
        pipe.execute()


class Outbox(Protocol):
    """Where events are kept until published; `fetch` returns the oldest unpublished first."""

    def add(self, events: Sequence[StreamEvent]) -> list[Any]: ...

    def fetch(self, limit: int) -> list[tuple[Any, StreamEvent]]: ...

    def mark_published(self, keys: Sequence[Any]) -> None: ...

    def pending(self) -> int: ...


class OutboxFull(RuntimeError):
    """The in-memory buffer is full: the event could not be kept."""


class MemoryOutbox:
    """A bounded in-process outbox (for processes without a database, and for tests)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._items: dict[int, StreamEvent] = {}
        self._next_key = 0
        self._lock = threading.Lock()

    def add(self, events: Sequence[StreamEvent]) -> list[Any]:
        with self._lock:
            if len(self._items) + len(events) > self.capacity:
                raise OutboxFull(f"event buffer full ({self.capacity} events not yet published)")
            keys = []
            for event in events:
                self._items[self._next_key] = event
                keys.append(self._next_key)
                self._next_key += 1
            return keys

    def fetch(self, limit: int) -> list[tuple[Any, StreamEvent]]:
        with self._lock:
            return [item for _, item in zip(range(limit), self._items.items(), strict=False)]

    def mark_published(self, keys: Sequence[Any]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def pending(self) -> int:
        with self._lock:
            return len(self._items)


class EventPublisher:
    """Publishes events that are already in the outbox, in order.

    The fast path appends a batch straight after it was stored and marks it published. When
    Redis fails (after a short, bounded retry) the publisher is backlogged: it stops the fast
    path and publishes from the outbox, oldest first, until the outbox is empty, so nothing
    overtakes an older event. Not thread-safe: one thread (the worker's recorder) calls it.
    """

    def __init__(
        self,
        writer: StreamWriter,
        outbox: Outbox,
        *,
        attempts: int = 3,
        initial_wait: float = 0.05,
        max_wait: float = 0.5,
        flush_batch: int = 500,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._writer = writer
        self._outbox = outbox
        self._flush_batch = flush_batch
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(REDIS_UNAVAILABLE),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=initial_wait, max=max_wait),
            sleep=sleep,
            reraise=True,
        )
        self._backlog = True  # until a flush has found the outbox empty
        self.published = 0

    def defer(self) -> None:
        """Something failed after a write (marking rows published): go through the outbox."""
        self._backlog = True

    @property
    def backlogged(self) -> bool:
        """True while stored events wait for Redis (new ones then wait behind them)."""
        return self._backlog

    def publish(self, stored: Sequence[tuple[Any, StreamEvent]]) -> bool:
        """Append stored events (outbox key, event) to their streams; True when the outbox
        holds nothing unpublished afterwards, False when they wait for Redis."""
        if self._backlog:
            return self.flush()
        if not stored:
            return True
        try:
            self._retrying(self._writer.write, [event for _, event in stored])
        except REDIS_UNAVAILABLE as error:
            log.warning("Redis unavailable, %d event(s) wait in the outbox: %s",
                        len(stored), error.__class__.__name__)
            self._backlog = True
            return False
        self._outbox.mark_published([key for key, _ in stored])
        self.published += len(stored)
        return True

    def flush(self) -> bool:
        """Publish what waits in the outbox, oldest first; True when it is empty afterwards."""
        while True:
            batch = self._outbox.fetch(self._flush_batch)
            if not batch:
                self._backlog = False
                return True
            try:
                self._writer.write([event for _, event in batch])
            except REDIS_UNAVAILABLE:
                self._backlog = True
                return False
            self._outbox.mark_published([key for key, _ in batch])
            self.published += len(batch)


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    stream: str
    entry_id: str
    event: StreamEvent


class EventReader:
    """Reads trunk streams: from the start or the end, alone or in a consumer group with ack.

    Survives a Redis restart: a vanished consumer group is created again (a restarted Redis
    starts empty, so reading then starts from the first new entry).
    """

    def __init__(
        self,
        client: redis.Redis[Any],
        settings: Settings,
        trunks: Sequence[str],
        *,
        group: str | None = None,
        consumer: str = "cli",
        from_start: bool = True,
    ) -> None:
        if not trunks:
            raise ValueError("no trunk to read events from")
        self._redis = client
        self._group = group
        self._consumer = consumer
        self._from_start = from_start
        self.streams = [settings.events_stream(trunk) for trunk in trunks]
        self._positions: dict[str, str] = {}
        self._groups_ready = False
        self._own_pending_first = True

    def _reset_positions(self) -> None:
        # The end is pinned to a real entry id now: reading from '$' again on every call
        # would miss entries added between two reads.
        self._positions = {
            stream: "0-0" if self._from_start else self._last_id(stream)
            for stream in self.streams
        }

    def seek(self, position: str) -> None:
        """Read entries after `position` (an entry id; '0-0' is the start) on every stream."""
        self._positions = dict.fromkeys(self.streams, position)

    def _ensure_groups(self, start: str | None = None) -> None:
        if start is None:
            start = "0" if self._from_start else "$"
        for stream in self.streams:
            try:
                self._redis.xgroup_create(stream, self._group or "", id=start, mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._groups_ready = True

    def read(self, *, block_ms: int | None = None, count: int = 500) -> list[ReceivedEvent]:
        """The next entries (waiting up to block_ms for some when given)."""
        if self._group is None:
            if not self._positions:
                self._reset_positions()
            # '$' must be replaced by a real id after the first read or entries added between
            # two reads would be missed.
            reply = self._redis.xread(self._positions, count=count, block=block_ms)
            received = self._decode(reply)
            for item in received:
                self._positions[item.stream] = item.entry_id
            return received
        if not self._groups_ready:
            self._ensure_groups()
        try:
            if self._own_pending_first:
                # What this consumer read before and never acknowledged (it stopped or
                # crashed) comes first; '0' returns those entries without blocking.
                reply = self._redis.xreadgroup(
                    self._group, self._consumer, dict.fromkeys(self.streams, "0"), count=count
                )
                pending = self._decode(reply)
                if pending:
                    return pending
                self._own_pending_first = False
            reply = self._redis.xreadgroup(
                self._group, self._consumer, dict.fromkeys(self.streams, ">"),
                count=count, block=block_ms,
            )
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream or group vanished (Redis restarted empty): whatever is there now
            # is new to us, so the group starts at the beginning.
            self._ensure_groups(start="0")
            return []
        return self._decode(reply)

    def _last_id(self, stream: str) -> str:
        entries = self._redis.xrevrange(stream, count=1)
        if not entries:
            return "0-0"
        entry_id = entries[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def pending_claim(self, *, min_idle_ms: int, count: int = 100) -> list[ReceivedEvent]:
        """Entries another consumer of the group read but never acknowledged (XAUTOCLAIM)."""
        if self._group is None:
            return []
        if not self._groups_ready:
            self._ensure_groups()
        claimed: list[ReceivedEvent] = []
        for stream in self.streams:
            reply = self._redis.xautoclaim(
                stream, self._group, self._consumer, min_idle_time=min_idle_ms, count=count
            )
            entries = reply[1] if len(reply) > 1 else []
            claimed.extend(self._decode([[stream, entries]]))
        return claimed

    def ack(self, items: Sequence[ReceivedEvent]) -> None:
        if self._group is None or not items:
            return
        by_stream: dict[str, list[str]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item.entry_id)
        pipe = self._redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self._group, *ids)
        pipe.execute()

    def follow(self, *, block_ms: int = 1000, stop: Callable[[], bool] = lambda: False,
               reconnect_wait: float = 0.5) -> Iterator[ReceivedEvent]:
        """Read forever (until `stop()`), riding out Redis restarts."""
        while not stop():
            try:
                batch = self.read(block_ms=block_ms)
            except REDIS_UNAVAILABLE:
                self._groups_ready = False
                time.sleep(reconnect_wait)
                continue
            yield from batch

    @staticmethod
    def _decode(reply: Any) -> list[ReceivedEvent]:
        received: list[ReceivedEvent] = []
        for stream, entries in reply or []:
            stream_name = stream.decode() if isinstance(stream, bytes) else str(stream)
            for entry_id, raw in entries or []:
                if raw is None:  # trimmed away while pending
                    continue
                ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                try:
                    event = StreamEvent.from_fields(decode_fields(raw))
                except (KeyError, ValueError):
                    log.warning("skipping malformed stream entry %s %s", stream_name, ident)
                    continue
                received.append(ReceivedEvent(stream_name, ident, event))
        return received


# --- the outbox in PostgreSQL -------------------------------------------------------------------


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
    connection = operations.connection_of(session)
    rows = outbox_rows(events, worker, extras)
    if connection.dialect.name == "postgresql":
        operations.insert_rows_pg(connection, "outbox_events", rows)
    else:
        connection.execute(operations.insert_ignoring(connection.dialect.name, "outbox_events"),
                           rows)
    return [event.event_id for event in events]


def fetch_unpublished(
    session: Session, limit: int, *, trunk: str | None, workers: Sequence[str] | None
) -> list[tuple[str, StreamEvent]]:
    """The oldest unpublished events as (outbox key = event_id, event)."""
    statement = select(OutboxEvent.event_id, OutboxEvent.payload).where(
        OutboxEvent.published_at.is_(None)
    )
    if trunk is not None:
        statement = statement.where(OutboxEvent.trunk == trunk)
    if workers is not None:
        statement = statement.where(OutboxEvent.payload["worker"].as_string().in_(list(workers)))
    rows = session.execute(statement.order_by(OutboxEvent.id).limit(limit)).all()
    return [(event_id, StreamEvent.from_json(payload)) for event_id, payload in rows]


def mark_published(session: Session | Connection, event_ids: Sequence[str]) -> int:
    """Mark outbox rows published by event_id (one array parameter on PostgreSQL)."""
    if not event_ids:
        return 0
    connection = operations.connection_of(session)
    table = OutboxEvent.__table__
    at = datetime.now(UTC)
    if connection.dialect.name == "postgresql":
        statement = _MARK_BY_EVENT_ID_PG
        params: dict[str, Any] = {"p_ids": list(event_ids), "p_at": at}
    else:
        statement = (
            update(table)  # type: ignore[arg-type]
            .where(table.c.event_id.in_(list(event_ids)), table.c.published_at.is_(None))
            .values(published_at=at)
        )
        params = {}
    return max(connection.execute(statement, params).rowcount, 0)


_outbox_table = OutboxEvent.__table__
_MARK_BY_EVENT_ID_PG = (
    update(_outbox_table)  # type: ignore[arg-type]
    .where(
        _outbox_table.c.event_id == any_(bindparam("p_ids", type_=postgresql.ARRAY(Text))),
        _outbox_table.c.published_at.is_(None),
    )
    .values(published_at=bindparam("p_at", type_=_outbox_table.c.published_at.type))
)


def count_unpublished(session: Session, *, trunk: str | None, workers: Sequence[str] | None) -> int:
    statement = select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.published_at.is_(None)
    )
    if trunk is not None:
        statement = statement.where(OutboxEvent.trunk == trunk)
    if workers is not None:
        statement = statement.where(OutboxEvent.payload["worker"].as_string().in_(list(workers)))
    return int(session.execute(statement).scalar_one())


def last_event_seqs(session: Session, leg_ids: Sequence[str]) -> dict[str, int]:
    """The highest stored event seq of each leg (legs without events are left out)."""
    if not leg_ids:
        return {}
    leg = OutboxEvent.payload["leg_id"].as_string()
    seq = OutboxEvent.payload["seq"].as_integer()
    statement = select(leg, func.max(seq)).where(leg.in_(list(leg_ids))).group_by(leg)
    return {str(leg_id): int(top) for leg_id, top in session.execute(statement).all()}


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
