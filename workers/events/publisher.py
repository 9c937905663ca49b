"""Publishing stored events to their trunk streams, in order, through an outbox.

The fast path appends a batch right after it was stored; when Redis fails, everything waits in
the outbox (PostgreSQL: workers.events.outbox, or the bounded MemoryOutbox) and is published
oldest first once Redis answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis
import tenacity

from workers.config.settings import Settings
from workers.events.entries import REDIS_UNAVAILABLE, StreamEvent

log = logging.getLogger(__name__)


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
