"""The thread that stores leg events (transition, outbox row, CDR), then publishes them.

It writes pending events in batches and then publishes them, in order. While PostgreSQL is
down the batch is retried and newer events wait behind it in memory; while Redis is down they
wait in the outbox (see workers.events.stream).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tenacity
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from models import operations
from models.repository import Repository
from models.transient import is_worth_waiting_for
from workers.events.outbox import PostgresOutbox, insert_outbox, mark_published
from workers.events.publisher import EventPublisher
from workers.observability.attach import leg_fields
from workers.runtime.book import LegContext, PendingEvent

log = logging.getLogger(__name__)


def persist_batch(
    session: Session | Connection,
    batch: Sequence[PendingEvent],
    worker: str,
    published: Sequence[str] = (),
) -> list[Any]:
    """One transaction: transitions (in order per leg), CDRs, and the outbox rows; plus the
    marks of events published since the last batch (`published` event_ids)."""
    if published:
        mark_published(session, published)
    transitions = [item.transition for item in batch if item.transition is not None]
    if transitions:
        operations.apply_transitions(session, transitions)
    cdrs = [item.cdr for item in batch if item.cdr is not None]
    if cdrs:
        operations.insert_cdrs(session, cdrs)
    return insert_outbox(
        session, [item.event for item in batch], worker, [item.extra for item in batch]
    )


@dataclass
class RecorderStats:
    events: int = 0
    batches: int = 0
    cdrs: int = 0
    outages: int = 0
    rejected: int = 0
    lost: int = 0


class LegRecorder:
    """The thread that stores and publishes leg events, in submission order."""

    def __init__(
        self,
        repository: Repository,
        publisher: EventPublisher,
        *,
        worker: str,
        outbox: PostgresOutbox | None = None,
        on_finished: Callable[[list[LegContext]], None] | None = None,
        batch_size: int = 2000,
        # Up to 20 ms for a batch to gather: a transaction per handful of events costs more
        # CPU (ours and PostgreSQL's) than the wait costs in latency.
        linger: float = 0.02,
        outage_pause: float = 0.5,
        backlog_retry: float = 0.5,
    ) -> None:
        self.repository = repository
        self.publisher = publisher
        self.worker = worker
        # With an outbox that defers its marks, they ride along in the next batch.
        self._outbox = outbox
        self.stats = RecorderStats()
        self._on_finished = on_finished
        self._batch_size = batch_size
        self._linger = linger
        self._outage_pause = outage_pause
        self._backlog_retry = backlog_retry
        self._queue: deque[PendingEvent] = deque()
        self._condition = threading.Condition()
        self._idle = False  # the thread waits for events (only then does submit wake it)
        self._done = 0
        self._stopping = False
        self._give_up_at: float | None = None
        self._thread: threading.Thread | None = None
        self._last_flush_attempt = 0.0
        self._publish_failed = False  # since the last time the outbox was found empty
        self.database_healthy = True

    def start(self) -> LegRecorder:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="leg-recorder", daemon=True)
            self._thread.start()
        return self

    def submit(self, pending: PendingEvent | None) -> None:
        """Queue an event (any thread; never blocks, never touches a server).

        The signaling loop calls this for every event: a deque append is atomic, and the
        condition is only taken to wake the thread when it is idle.
        """
        if pending is None:
            return
        self._queue.append(pending)
        if self._idle:
            with self._condition:
                self._condition.notify()

    @property
    def backlog(self) -> int:
        with self._condition:
            return len(self._queue)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is stored (and published if Redis is up)."""
        with self._condition:
            # stored ones leave the queue only once stored: done + queued covers every event
            target = self._done + len(self._queue)
            return self._condition.wait_for(lambda: self._done >= target, timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        """Store what is queued (up to `timeout`), then stop. False when events were lost."""
        flushed = self.flush(timeout)
        with self._condition:
            self._stopping = True
            self._give_up_at = time.monotonic()
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._outage_pause + 10)
            self._thread = None
        if not flushed:
            lost = self.backlog
            self.stats.lost += lost
            log.critical("recorder stopped with %d events not stored", lost)
        return flushed

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                self._publish_backlog(force=True)
                self._apply_marks()
                return
            if batch:
                keys = self._store(batch)
                if keys is None:
                    return
                self._after_store(batch, keys)
            else:
                self._apply_marks()  # idle: nothing to carry them
            self._publish_backlog(force=False)

    def _apply_marks(self) -> None:
        if self._outbox is None:
            return
        try:
            self._outbox.apply_marks()
        except Exception as error:
            log.warning("marking published events failed (they are marked later): %s",
                        error.__class__.__name__)

    def _take(self) -> list[PendingEvent] | None:
        with self._condition:
            if not self._queue and not self._stopping:
                self._idle = True  # announced before the second look: no wake-up is missed
                if not self._queue:
                    self._condition.wait(self._backlog_retry)
                self._idle = False
            if not self._queue:
                return None if self._stopping else []
            if len(self._queue) < self._batch_size and self._linger > 0:
                self._condition.wait(self._linger)  # let a batch gather (nobody wakes this)
            return list(itertools.islice(self._queue, self._batch_size))

    def _store(self, batch: list[PendingEvent]) -> list[Any] | None:
        """Write the batch; on a transient error keep trying (None: stopped while down).

        The repository's own tenacity policy rides out a blip (a few attempts, backoff); this
        outer one is the outage: it retries transient errors and a not-yet-migrated database
        only (`models.transient.is_worth_waiting_for`), every `outage_pause`, until the
        database is back, and stops when the recorder is stopped.
        Integrity and data errors are never retried: the batch is written item by item so
        only the refused events are dropped.
        """
        marks = self._outbox.take_marks() if self._outbox is not None else []
        while True:
            try:
                keys: list[Any] = self._outage_retrying()(
                    self.repository.run_connection, persist_batch, batch, self.worker, marks
                )
            except Exception as error:
                if marks and self._outbox is not None:
                    self._outbox.give_back_marks(marks)
                    marks = []
                if is_worth_waiting_for(error):
                    return None  # stopped while the database was down
                self._apply_marks()
                one_by_one = self._store_one_by_one(batch)
                if one_by_one is None:
                    continue  # the database went away meanwhile: the whole batch again
                keys = one_by_one
            break
        if not self.database_healthy:
            log.warning("PostgreSQL reachable again")
        self.database_healthy = True
        return keys

    def _outage_retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_worth_waiting_for),
            stop=lambda _state: self._stopping,
            wait=tenacity.wait_fixed(self._outage_pause),
            sleep=self._outage_sleep,
            before_sleep=self._outage_began,
            reraise=True,
        )

    def _outage_began(self, state: tenacity.RetryCallState) -> None:
        if self.database_healthy:
            error = state.outcome.exception() if state.outcome else None
            self.stats.outages += 1
            log.error("PostgreSQL unavailable; %d events wait: %s",
                      self.backlog, error.__class__.__name__)
        self.database_healthy = False

    def _outage_sleep(self, seconds: float) -> None:
        with self._condition:  # stop() wakes it
            if not self._stopping:
                self._condition.wait(seconds)

    def _store_one_by_one(self, batch: list[PendingEvent]) -> list[Any] | None:
        keys: list[Any] = []
        for item in batch:
            try:
                keys.extend(self.repository.run_connection(persist_batch, [item], self.worker))
            except Exception as error:
                if is_worth_waiting_for(error):
                    return None
                self.stats.rejected += 1
                log.error("PostgreSQL refused event %s, not stored: %s",
                          item.event.event_id, error, extra=leg_fields(item.context))
                keys.append(None)
        return keys

    def _after_store(self, batch: list[PendingEvent], keys: list[Any]) -> None:
        stored = [(key, item.event) for key, item in zip(keys, batch, strict=True)
                  if key is not None]
        try:
            if not self.publisher.publish(stored):
                self._publish_failed = True
        except Exception as error:
            log.error("publishing events failed; they wait in the outbox: %s", error)
            self.publisher.defer()
            self._publish_failed = True
        self._last_flush_attempt = time.monotonic()
        finished = [item.context for item in batch if item.event.terminal]
        self.stats.events += len(batch)
        self.stats.batches += 1
        self.stats.cdrs += sum(1 for item in batch if item.cdr is not None)
        with self._condition:
            for _ in batch:
                self._queue.popleft()
            self._done += len(batch)
            self._condition.notify_all()
        if finished and self._on_finished is not None:
            try:
                self._on_finished(finished)
            except Exception:
                log.exception("on_finished hook failed")

    def _publish_backlog(self, *, force: bool) -> None:
        if not self.publisher.backlogged:
            return
        now = time.monotonic()
        if not force and now - self._last_flush_attempt < self._backlog_retry:
            return
        self._last_flush_attempt = now
        try:
            published = self.publisher.flush()
        except Exception as error:
            log.warning("outbox flush failed: %s", error.__class__.__name__)
            self.publisher.defer()
            published = False
        if not published:
            self._publish_failed = True
        elif self._publish_failed:  # not at start, when the first flush finds it empty
            self._publish_failed = False
            log.warning("Redis reachable again; outbox published")
