"""From the signaling loop to the outside: each leg event becomes a leg-row transition, an
outbox row (and a CDR at the end) in one PostgreSQL transaction, then a Redis stream entry.

`LegBook` runs on the signaling loop: it knows which leg (row id, trunk, next seq) a Call-ID
or correlation_id belongs to and turns core events into `PendingEvent`s without blocking.
`LegRecorder` is a thread: it writes pending events in batches and then publishes them, in
order. While PostgreSQL is down the batch is retried and newer events wait behind it in
memory; while Redis is down they wait in the outbox (see workers.events_stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from models import operations
from models.db import make_engine
from models.dial_fields import InvalidDialRequest, validate_dial_fields
from models.enums import TERMINAL_STATES, LegState, leg_state_for_event
from models.operations import ClaimedLeg, PendingCdr, Transition
from models.repository import Repository
from models.times import utc_now
from models.transient import is_transient
from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.config import CoreConfig
from sipstack.dial import DialRequest
from sipstack.dialog import DialogSnapshot
from sipstack.errors import LocalProtocolError
from sipstack.events import LegEvent, ProvisionalReceived
from sipstack.transport import Transport
from workers.app import DIAL_BATCH_TASK, dial_queue_name
from workers.config import Settings, TrunkConfig
from workers.events_stream import (
    REDIS_UNAVAILABLE,
    EventPublisher,
    PostgresOutbox,
    StreamEvent,
    StreamWriter,
    insert_outbox,
    mark_published,
)
from workers.limits import TrunkLimits
from workers.logging_setup import call_fields
from workers.observability import WorkerObservability, leg_fields
from workers.recovery import (
    BrokerResetWatch,
    Heartbeat,
    OwnerWatch,
    RecoveredLeg,
    adopt,
    dialog_columns,
    live_owners,
    new_instance_id,
    owner_id,
    queued_legs,
    recovery_cseq,
    snapshot_to_json,
)
from workers.signaling.manager import ManagerHooks, SignalingService

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LegContext:
    """What the worker keeps about one of its legs between events."""

    leg_id: str
    trunk: str
    correlation_id: str
    scenario: str
    from_uri: str = ""
    to_uri: str = ""
    call_id: str = ""
    seq: int = 0  # the last event seq used
    started_at: float | None = None
    first_provisional_at: float | None = None
    answered_at: float | None = None
    established: bool = False
    finished: bool = False  # its terminal event has been produced
    leg_uuid: uuid.UUID | None = None  # leg_id parsed once (every event's row write needs it)

    @property
    def leg_key(self) -> uuid.UUID:
        if self.leg_uuid is None:
            self.leg_uuid = uuid.UUID(self.leg_id)
        return self.leg_uuid

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """One event on its way to PostgreSQL and the stream; `extra` goes into the outbox row
    only (the dialog state crash recovery needs)."""

    context: LegContext
    event: StreamEvent
    transition: Transition | None
    cdr: PendingCdr | None = None
    extra: Mapping[str, Any] | None = None


# call_id -> the dialog snapshot of a live leg (None when the core no longer has it)
SnapshotSource = Callable[[str], DialogSnapshot | None]


class LegBook:
    """The worker's live legs, keyed by correlation_id and Call-ID (signaling loop side).

    `register` may be called from any thread; everything else runs on the loop.
    """

    def __init__(
        self, worker: str, snapshots: SnapshotSource | None = None, *, trunk: str = ""
    ) -> None:
        self.worker = worker
        self.trunk = trunk
        self._snapshots = snapshots
        self._by_correlation: dict[str, LegContext] = {}
        self._by_call_id: dict[str, LegContext] = {}
        self._lock = threading.Lock()

    def set_snapshot_source(self, snapshots: SnapshotSource) -> None:
        self._snapshots = snapshots

    def register(self, context: LegContext) -> LegContext:
        with self._lock:
            self._by_correlation[context.correlation_id] = context
            if context.call_id:
                self._by_call_id[context.call_id] = context
        return context

    def forget(self, context: LegContext) -> None:
        with self._lock:
            if self._by_correlation.get(context.correlation_id) is context:
                del self._by_correlation[context.correlation_id]
            if self._by_call_id.get(context.call_id) is context:
                del self._by_call_id[context.call_id]

    def live(self) -> list[LegContext]:
        with self._lock:
            return [ctx for ctx in self._by_correlation.values() if not ctx.finished]

    def find(
        self, *, leg_id: str | None = None, correlation_id: str | None = None,
        call_id: str | None = None,
    ) -> LegContext | None:
        # One dict lookup is atomic: the loop's per-event lookups take no lock.
        if correlation_id is not None:
            return self._by_correlation.get(correlation_id)
        if call_id is not None:
            return self._by_call_id.get(call_id)
        if leg_id is not None:
            with self._lock:
                return next(
                    (c for c in self._by_correlation.values() if c.leg_id == leg_id), None
                )
        return None

    def call_id_adopted(self, old: str, new: str, correlation_id: str) -> None:
        with self._lock:
            context = self._by_correlation.get(correlation_id) or self._by_call_id.get(old)
            if context is None:
                return
            self._by_call_id.pop(old, None)
            context.call_id = new
            self._by_call_id[new] = context

    def pending_for(self, event: LegEvent) -> PendingEvent | None:
        """Turn a core lifecycle event into a pending write; None for a leg we do not know."""
        context = self.find(correlation_id=event.correlation_id) or self.find(
            call_id=event.call_id
        )
        if context is None or context.finished:
            log.warning("event %s for unknown leg", event.state, extra=call_fields(
                call_id=event.call_id, correlation_id=event.correlation_id, trunk=self.trunk))
            return None
        if context.call_id != event.call_id:
            with self._lock:
                self._by_call_id.pop(context.call_id, None)
                context.call_id = event.call_id
                self._by_call_id[event.call_id] = context
        state = event.state
        if state == "invited":
            context.started_at = context.started_at or event.at
        elif state == "provisional":
            context.first_provisional_at = context.first_provisional_at or event.at
        elif state == "established":
            context.answered_at = event.at
            context.established = True
        fields: dict[str, Any] = {"call_id": event.call_id}
        extra: dict[str, Any] | None = None
        if state in ("invited", "established") and self._snapshots is not None:
            snapshot = self._snapshots(event.call_id)
            if snapshot is not None:
                fields.update(dialog_columns(snapshot))
                extra = {"dialog": snapshot_to_json(snapshot)}
        if event.status_code is not None:
            fields["last_status_code"] = event.status_code
        if event.reason:
            fields["last_reason"] = event.reason[:500]
        has_sdp = isinstance(event, ProvisionalReceived) and event.has_sdp
        transition = Transition.make(
            context.leg_key, leg_state_for_event(state, has_sdp=has_sdp), event.at, **fields
        )
        cdr = None
        if event.terminal:
            context.finished = True
            record: CdrRecord = event.cdr  # type: ignore[attr-defined]
            cdr = PendingCdr(record, self.worker, context.leg_key)
        stream_event = StreamEvent(
            trunk=context.trunk, leg_id=context.leg_id, seq=context.next_seq(), state=state,
            call_id=event.call_id, correlation_id=context.correlation_id,
            scenario=context.scenario, status_code=event.status_code, reason=event.reason,
            at=event.at, outcome=cdr.record.outcome.as_text() if cdr is not None else None,
        )
        return PendingEvent(context, stream_event, transition, cdr, extra)

    def synthetic_end(
        self,
        context: LegContext,
        *,
        at: float,
        state: str,
        reason: str,
        disposition: Disposition,
        hangup_reason: HangupReason = HangupReason.ERROR,
        status_code: int | None = None,
        error: str | None = None,
    ) -> PendingEvent:
        """A terminal event and CDR the core did not produce: a leg that failed before its
        INVITE, was dropped at shutdown, or is ended by crash recovery."""
        context.finished = True
        call_id = context.call_id or f"{uuid.uuid4().hex}@no-invite.invalid"
        context.call_id = call_id
        record = CdrRecord(
            call_id=call_id, correlation_id=context.correlation_id, scenario=context.scenario,
            trunk=context.trunk, from_uri=context.from_uri, to_uri=context.to_uri,
            started_at=context.started_at if context.started_at is not None else at,
            first_provisional_at=context.first_provisional_at,
            answered_at=context.answered_at, ended_at=max(at, context.started_at or at),
            final_status_code=status_code if status_code is not None else (
                200 if context.answered_at is not None else None
            ),
            disposition=disposition, hangup_reason=hangup_reason, hangup_by=HangupBy.LOCAL,
            reason_text=reason, error=error,
        )
        leg_state = LegState.FAILED if state == "failed" else LegState.ENDED
        fields: dict[str, Any] = {"last_reason": reason[:500]}
        if context.call_id:
            fields["call_id"] = call_id
        if status_code is not None:
            fields["last_status_code"] = status_code
        transition = Transition.make(context.leg_key, leg_state, at, **fields)
        stream_event = StreamEvent(
            trunk=context.trunk, leg_id=context.leg_id, seq=context.next_seq(), state=state,
            call_id=call_id, correlation_id=context.correlation_id, scenario=context.scenario,
            status_code=status_code, reason=reason, at=at, outcome=record.outcome.as_text(),
        )
        return PendingEvent(
            context, stream_event, transition, PendingCdr(record, self.worker,
                                                          context.leg_key)
        )


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
        """Write the batch; on a transient error keep trying (None: stopped while down)."""
        marks = self._outbox.take_marks() if self._outbox is not None else []
        while True:
            try:
                keys: list[Any] | None = self.repository.run_connection(
                    persist_batch, batch, self.worker, marks
                )
            except Exception as error:
                if not is_transient(error):
                    if marks and self._outbox is not None:
                        self._outbox.give_back_marks(marks)
                        marks = []
                        self._apply_marks()
                    keys = self._store_one_by_one(batch)
                    if keys is None:
                        continue
                    break
                if self.database_healthy:
                    self.stats.outages += 1
                    log.error("PostgreSQL unavailable; %d events wait: %s",
                              self.backlog, error.__class__.__name__)
                self.database_healthy = False
                with self._condition:
                    if self._stopping:
                        if marks and self._outbox is not None:
                            self._outbox.give_back_marks(marks)
                        return None
                    self._condition.wait(self._outage_pause)
                continue
            break
        if not self.database_healthy:
            log.warning("PostgreSQL reachable again")
        self.database_healthy = True
        return keys

    def _store_one_by_one(self, batch: list[PendingEvent]) -> list[Any] | None:
        keys: list[Any] = []
        for item in batch:
            try:
                keys.extend(self.repository.run_connection(persist_batch, [item], self.worker))
            except Exception as error:
                if is_transient(error):
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


class DialFeeder:
    """Hands claimed legs' dial requests from the task threads to the signaling loop.

    Requests wait in a queue; one loop wake-up sends the INVITEs queued by then, instead of a
    wake-up, a Task and a future per dial with a task thread blocked on each. They go out
    `slice_size` at a time with a loop turn in between, so responses are read while a burst
    is being sent (a full socket buffer would drop them and cause retransmissions). Task
    threads `reserve` room before claiming: with `max_queued` dials waiting or reserved they
    block (up to `max_wait`), so legs stay queued in PostgreSQL and the broker rather than
    claimed and not yet dialed.
    A request the loop refuses (or one left when the loop is gone) goes to `on_refused`,
    which ends the leg with an event and a CDR: a claimed leg never stays without an end.
    """

    def __init__(
        self,
        signaling: SignalingService,
        on_refused: Callable[[LegContext, str], object],
        *,
        slice_size: int = 32,
        max_queued: int = 128,
        max_wait: float = 10.0,
    ) -> None:
        self._signaling = signaling
        self._on_refused = on_refused
        self._slice_size = slice_size
        self._max_queued = max_queued
        self._max_wait = max_wait
        self._queue: deque[tuple[LegContext, DialRequest]] = deque()
        self._condition = threading.Condition()
        self._reserved = 0
        self._scheduled = False
        self._closed = False
        self.slices = 0

    def reserve(self, count: int) -> int:
        """Hold room for `count` dials, blocking (up to `max_wait`) while the queue and other
        threads' reservations fill it: task threads reserve before they take limits and
        claim, so no more legs are claimed than the loop is about to dial. Each `submit`
        uses one reserved place; `release` gives back the ones not used."""
        with self._condition:
            self._condition.wait_for(
                lambda: len(self._queue) + self._reserved + count
                <= max(self._max_queued, count) or self._closed,
                self._max_wait,
            )
            self._reserved += count
        return count

    def release(self, count: int) -> None:
        if count <= 0:
            return
        with self._condition:
            self._reserved = max(0, self._reserved - count)
            self._condition.notify_all()

    def submit(self, context: LegContext, request: DialRequest) -> None:
        """Queue a dial (any thread); the loop sends it soon after."""
        with self._condition:
            self._reserved = max(0, self._reserved - 1)
            closed = self._closed
            if not closed:
                self._queue.append((context, request))
                if self._scheduled:
                    return
                self._scheduled = True
        if closed:
            self._on_refused(context, "INVITE not sent: the signaling loop has stopped")
            return
        sending = self._send_queued()
        try:
            self._signaling.submit(sending)
        except RuntimeError as error:  # the loop is closed: nothing will send these
            sending.close()
            self._refuse_all(f"INVITE not sent: {error}")

    def close(self) -> None:
        """Refuse whatever is still queued (after the loop has stopped)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._refuse_all("INVITE not sent: the worker stopped first")

    def _take(self, limit: int | None) -> list[tuple[LegContext, DialRequest]]:
        with self._condition:
            count = len(self._queue) if limit is None else min(limit, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            if not self._queue:
                self._scheduled = False  # the next submit schedules a new sender
            self._condition.notify_all()
        return batch

    def _refuse_all(self, reason: str) -> None:
        for context, _request in self._take(None):
            self._on_refused(context, reason)

    async def _send_queued(self) -> None:
        manager = self._signaling.manager
        while batch := self._take(self._slice_size):
            self.slices += 1
            for context, request in batch:
                try:
                    await manager.dial(request)
                except LocalProtocolError as error:
                    self._on_refused(context, f"INVITE not sent: {error}")
                except Exception as error:
                    self._on_refused(context, f"INVITE not sent: {error.__class__.__name__}")
                    log.exception("dialing failed", extra=leg_fields(context))
            if not self._scheduled:
                return
            await asyncio.sleep(0)  # a loop turn: read what arrived before the next slice


@dataclass(slots=True)
class DialOutcome:
    """What became of one dial message."""

    status: str  # accepted | duplicate | retry | requeue | failed
    detail: str = ""
    retry_after: float = 0.0
    call_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchOutcome:
    """What became of the legs of one dial message (one leg or a batch)."""

    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    retry: list[tuple[str, str]] = field(default_factory=list)  # (leg id, correlation_id)
    retry_after: float = 0.0
    requeue: str = ""  # set: this worker cannot take the message at all (why)
    detail: str = ""

    def note_failed(self, why: str) -> None:
        self.failed += 1
        self.detail = why

    def retry_later(self, legs: Sequence[tuple[Any, str, str]], after: float, why: str) -> None:
        self.retry.extend((text, correlation_id) for _, text, correlation_id in legs)
        self.retry_after = max(self.retry_after, after)
        self.detail = why

    def summary(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "failed": self.failed, "retried": len(self.retry)}


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """Everything one pinned worker process needs to know."""

    settings: Settings
    trunk: TrunkConfig
    node: str  # the Celery node name (its direct queue is `<node>.dq2`)
    bind_host: str = "127.0.0.1"
    sip_port: int = 0
    user_agent: str = "outbound/0.1"
    maintenance_interval: float | None = None  # default: a third of the heartbeat TTL
    # metrics and call log lines (default: log lines only)
    observability: WorkerObservability | None = None


class WorkerRuntime:
    """One worker's signaling service, leg book, recorder, limits, heartbeat and recovery.

    Plain Python: the Celery bootstep starts and stops it, the tasks call `handle_dial` and
    `handle_control`; tests can drive it without Celery.
    """

    def __init__(
        self, options: WorkerOptions, *, app: Celery | None = None, dial_threads: int = 8
    ) -> None:
        self.options = options
        self.dial_threads = dial_threads
        self.settings = options.settings
        self.trunk = options.trunk
        self.app = app
        self.instance = new_instance_id()
        self.owner = owner_id(options.node, self.instance)
        self.accepting = False
        self.observability = options.observability or WorkerObservability(options.trunk.name)
        self.stats: dict[str, int] = {"accepted": 0, "duplicates": 0, "retries": 0,
                                      "failed": 0, "recovered": 0, "requeued": 0}
        self._stop_maintenance = threading.Event()
        self._next_purge = 0.0
        self._maintenance: threading.Thread | None = None
        self._started = False

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> WorkerRuntime:
        settings = self.settings
        # One pooled connection per dial thread plus the recorder's and maintenance's: a pool
        # smaller than that opens and closes a connection for every dial (overflow churn).
        # No pre-ping (a round trip per transaction): a connection a restarted server dropped
        # fails its statement, is invalidated, and the repository's retry takes a fresh one.
        self.repository = Repository(make_engine(
            settings.database_url, pool_size=self.dial_threads + 4, max_overflow=4,
            pool_pre_ping=False,
        ))
        self.redis: redis.Redis[Any] = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2,
            health_check_interval=10,
        )
        self.broker_redis: redis.Redis[Any] | None = None
        if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
            self.broker_redis = redis.Redis.from_url(
                settings.broker_url, socket_timeout=2, socket_connect_timeout=2
            )
        self.limits = TrunkLimits(self.redis, settings)
        self.heartbeat = Heartbeat(
            self.redis, settings, node=self.options.node, instance=self.instance,
            trunk=self.trunk.name, on_beat=self._renew_leases,
        )
        self.heartbeat.take_over()
        self.book = LegBook(self.owner, trunk=self.trunk.name)
        self.outbox = PostgresOutbox(
            self.repository, trunk=self.trunk.name, workers=[self.owner], defer_marks=True
        )
        self.publisher = EventPublisher(StreamWriter(self.redis, settings), self.outbox)
        self.recorder = LegRecorder(
            self.repository, self.publisher, worker=self.owner, outbox=self.outbox,
            on_finished=self._finished,
        ).start()
        hooks = ManagerHooks(
            on_event=self._on_event,
            on_dialog_call_id_adopted=self.book.call_id_adopted,
            on_leg_removed=self._on_leg_removed,
        )
        core_config = CoreConfig(
            local_addresses={Transport.UDP: (self.options.bind_host, self.options.sip_port)},
            from_user=self.trunk.caller_user or "outbound",
            from_display_name=self.trunk.caller_display_name,
            user_agent=self.options.user_agent,
        )
        # With the trunk's certificate there is a TLS listener: sips: Contacts point at it.
        transport_config = self.trunk.transport_config(self.options.bind_host,
                                                       self.options.sip_port)
        self.signaling = SignalingService(core_config, transport_config, hooks,
                                          thread_name=f"sip-{self.trunk.name}")
        self.signaling.start()
        self.feeder = DialFeeder(self.signaling, self._fail_before_invite)
        self.book.set_snapshot_source(self._snapshot)
        self.observability.attach(self)
        self.heartbeat.start()
        self.owner_watch = OwnerWatch(self.redis, settings)
        self.broker_watch = (
            BrokerResetWatch(self.broker_redis, settings, self.trunk.name)
            if self.broker_redis is not None else None
        )
        self._started = True
        self.accepting = True
        self.maintain()  # a dead predecessor's legs are ended before the first dial
        interval = self.options.maintenance_interval or settings.heartbeat_ttl / 3
        self._maintenance = threading.Thread(
            target=self._maintain_forever, args=(interval,), name="maintenance", daemon=True
        )
        self._maintenance.start()
        log.info("worker %s serving trunk %s, SIP on %s", self.owner, self.trunk.name,
                 self._listening())
        return self

    def _listening(self) -> str:
        transports = self.signaling.manager.transports
        return ", ".join(
            f"{kind.value} {_render_address(transports.local_address(kind))}"
            for kind in Transport if kind is Transport.UDP or transports.is_listening(kind)
        )

    @property
    def sip_address(self) -> tuple[str, int]:
        return self.signaling.manager.local_address

    def stop(self, drain_timeout: float | None = None) -> bool:
        """Graceful stop: no new dials, CANCEL unanswered legs, let answered ones run up to
        the drain timeout, BYE what is left, store every event and CDR. True when nothing
        was lost."""
        if not self._started:
            return True
        self._started = False
        self.accepting = False
        self._stop_maintenance.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=30)
        timeout = self.settings.drain_timeout if drain_timeout is None else drain_timeout
        self._drain(timeout)
        self.signaling.stop(timeout=10.0)
        self.feeder.close()
        stored = self.recorder.stop(timeout=60.0)
        self.heartbeat.stop(remove=stored)
        self._release_quietly([c.leg_id for c in self.book.live()])
        self.redis.close()
        if self.broker_redis is not None:
            self.broker_redis.close()
        self.repository.engine.dispose()
        return stored

    def _drain(self, timeout: float) -> None:
        def cancel_unanswered() -> int:
            manager = self.signaling.manager
            for call_id in manager.live_legs():
                if not manager.is_leg_established(call_id):
                    try:
                        manager.send_cancel(call_id)
                    except LocalProtocolError as error:
                        context = self.book.find(call_id=call_id)
                        log.debug("drain: not cancelled: %s", error, extra=leg_fields(context)
                                  if context is not None else call_fields(call_id=call_id))
            return len(manager.live_legs())

        try:
            live = self.signaling.call(cancel_unanswered).result(timeout=10)
        except Exception as error:
            log.error("drain: could not cancel unanswered legs: %s", error)
            return
        log.info("draining %d leg(s) for up to %.0f s", live, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                live = self.signaling.call(
                    lambda: len(self.signaling.manager.live_legs())
                ).result(timeout=5)
            except Exception:
                break
            if live == 0:
                return
            time.sleep(0.1)
        log.info("drain timeout: %d leg(s) still up get a BYE", live)

    # --- signaling loop hooks ------------------------------------------------------------------

    def _record(self, pending: PendingEvent | None) -> None:
        """Hand an event to the recorder (any thread; never blocks)."""
        if pending is None:
            return
        self.recorder.submit(pending)
        try:  # metrics and log lines never cost an event its storage
            self.observability.recorded(pending)
        except Exception:
            log.exception("observing event %s failed", pending.event.event_id)

    def _on_event(self, event: LegEvent) -> None:
        self._record(self.book.pending_for(event))

    def _snapshot(self, call_id: str) -> DialogSnapshot | None:
        try:
            return self.signaling.manager.dialog_snapshot(call_id)
        except LocalProtocolError:
            return None

    def _on_leg_removed(self, call_id: str) -> None:
        context = self.book.find(call_id=call_id)
        if context is not None and not context.finished:
            # dropped without a terminal event (shutdown timeout): it still gets one, and a CDR
            self._record(self.book.synthetic_end(
                context, at=time.time(), state="ended" if context.established else "failed",
                reason="dropped by the worker at shutdown (no answer to BYE/CANCEL)",
                disposition=Disposition.ANSWERED if context.established else Disposition.FAILED,
            ))

    def _finished(self, contexts: list[LegContext]) -> None:
        for context in contexts:
            self.book.forget(context)
        with contextlib.suppress(*REDIS_UNAVAILABLE):  # else the leases lapse by themselves
            self.limits.release_leases(self.trunk.name, [c.leg_id for c in contexts])

    def _renew_leases(self) -> None:
        live = [context.leg_id for context in self.book.live()]
        if live:
            self.limits.renew_leases(self.trunk.name, live)

    # --- dials ---------------------------------------------------------------------------------

    def handle_dial(
        self, leg_id: str, trunk: str, correlation_id: str = "", enqueued_at: float | None = None
    ) -> DialOutcome:
        """Take the trunk's limits, claim the leg and hand it to the loop (one dial message)."""
        batch = self.handle_dial_batch(trunk, [(leg_id, correlation_id)], enqueued_at)
        if batch.requeue:
            return DialOutcome("requeue", batch.requeue)
        if batch.retry:
            return DialOutcome("retry", batch.detail, retry_after=batch.retry_after)
        status = ("accepted" if batch.accepted else "duplicate" if batch.duplicates
                  else "failed")
        return DialOutcome(status, batch.detail)

    def handle_dial_batch(
        self, trunk: str, legs: Sequence[tuple[str, str]], enqueued_at: float | None = None
    ) -> BatchOutcome:
        """Take the trunk's limits for the legs, claim them and hand them to the loop.

        Two round trips for the whole message (one Redis script, one UPDATE … RETURNING);
        legs are only read when their claim lost, to say why. Legs the limits refuse come back
        in `retry`. The INVITEs go out on the loop after the task returned: a leg that cannot
        be dialed there still ends with an event and a CDR.
        """
        outcome = BatchOutcome()
        if not self.accepting:
            outcome.requeue = "worker is stopping"
            return outcome
        if trunk != self.trunk.name:
            outcome.requeue = f"this worker serves trunk {self.trunk.name!r}"
            return outcome
        valid: list[tuple[uuid.UUID, str, str]] = []
        for leg_id, correlation_id in legs:
            try:
                valid.append((operations.as_uuid(leg_id), leg_id, correlation_id))
            except ValueError:
                outcome.note_failed(f"leg id {leg_id!r} is not a UUID")
        if not valid:
            self._count(outcome)
            return outcome
        # Room first, limits next: a CPS slot is taken just before its INVITE goes out.
        reserved = self.feeder.reserve(len(valid))
        accepted_before = outcome.accepted
        try:
            self._admit_claim_hand_over(trunk, valid, outcome, enqueued_at)
        finally:
            self.feeder.release(reserved - (outcome.accepted - accepted_before))
        self._count(outcome)
        return outcome

    def _admit_claim_hand_over(
        self, trunk: str, valid: list[tuple[uuid.UUID, str, str]], outcome: BatchOutcome,
        enqueued_at: float | None,
    ) -> None:
        try:
            admission = self.limits.admit_many(
                trunk, [text for _, text, _ in valid],
                max_concurrent=self.trunk.max_concurrent, cps=self.trunk.cps,
            )
        except REDIS_UNAVAILABLE:
            outcome.retry_later(valid, 1.0, "Redis unavailable for the trunk limits")
            return
        admitted, refused = valid[:admission.admitted], valid[admission.admitted:]
        if refused:
            if admission.refused_by == "cps":
                outcome.retry_later(refused, admission.retry_after + random.random() * 0.05,
                                    "cps reached")
            else:
                outcome.retry_later(refused, 0.1 + random.random() * 0.4,
                                    "max_concurrent reached")
        if admitted:
            self._claim_and_hand_over(admitted, outcome, enqueued_at)

    def _claim_and_hand_over(
        self, admitted: list[tuple[uuid.UUID, str, str]], outcome: BatchOutcome,
        enqueued_at: float | None,
    ) -> None:
        try:
            # The token is drawn once: a retry after a lost commit answer wins its claims again.
            claimed = self.repository.run_connection(
                operations.claim_for_dial, worker=self.owner, token=uuid.uuid4(),
                at=utc_now(), leg_ids=[leg for leg, _, _ in admitted],
            )
        except Exception as error:
            self._release_quietly([text for _, text, _ in admitted])
            self._raise_unless_transient(error, "claiming legs")
            outcome.retry_later(admitted, 1.0, "PostgreSQL unavailable while claiming")
            return
        self.observability.claimed(len(claimed), enqueued_at)
        won = {leg.leg_id for leg in claimed}
        lost = [item for item in admitted if item[0] not in won]
        if lost:
            self._not_claimed(lost, outcome)
        for leg in claimed:
            self._hand_over(leg, outcome)

    def _not_claimed(self, lost: list[tuple[uuid.UUID, str, str]], outcome: BatchOutcome) -> None:
        """Why claims lost (a redelivered or repeated message, or no such leg)."""
        try:
            found = self.repository.run_connection(
                operations.leg_states, [leg for leg, _, _ in lost]
            )
        except Exception as error:
            self._raise_unless_transient(error, "reading legs")
            outcome.retry_later(lost, 1.0, "PostgreSQL unavailable while reading legs")
            return
        # Live legs keep their lease (its member is the leg id, held by the leg's owner).
        self._release_quietly([
            text for leg, text, _ in lost if leg not in found or found[leg][0] in TERMINAL_STATES
        ])
        for leg, text, correlation_id in lost:
            fields = call_fields(correlation_id=correlation_id, trunk=self.trunk.name,
                                 leg_id=text)
            if leg not in found:
                outcome.note_failed(f"no leg {leg} in the database")
                log.warning("dial message for a leg that is not in the database", extra=fields)
            else:
                state, owner = found[leg]
                outcome.duplicates += 1
                outcome.detail = f"leg is already {state.value} ({owner})"
                log.debug("dial message again: %s", outcome.detail, extra=fields)

    def _hand_over(self, leg: ClaimedLeg, outcome: BatchOutcome) -> None:
        leg_id = str(leg.leg_id)
        context = LegContext(
            leg_id=leg_id, trunk=self.trunk.name, correlation_id=leg.correlation_id,
            scenario=leg.scenario, to_uri=leg.request_uri, leg_uuid=leg.leg_id,
            from_uri=f"sip:{leg.caller_user or self.trunk.caller_user or 'outbound'}@"
                     f"{self.options.bind_host}",
        )
        try:
            request = self.trunk.build_request(validate_dial_fields(dict(leg.request)))
        except (InvalidDialRequest, ValueError) as error:
            reason = f"stored request is not dialable: {error}"
            self._fail_before_invite(context, reason)
            outcome.note_failed(reason)
            return
        self.book.register(context)
        self.feeder.submit(context, request)
        outcome.accepted += 1

    def _count(self, outcome: BatchOutcome) -> None:
        self.stats["accepted"] += outcome.accepted
        self.stats["duplicates"] += outcome.duplicates
        self.stats["failed"] += outcome.failed
        self.stats["retries"] += len(outcome.retry)

    def _fail_before_invite(self, context: LegContext, reason: str) -> None:
        """End a claimed leg that never got its INVITE out (any thread)."""
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="failed", reason=reason,
            disposition=Disposition.FAILED, error=reason,
        ))
        log.warning("failed before its INVITE: %s", reason, extra=leg_fields(context))

    @staticmethod
    def _raise_unless_transient(error: Exception, doing: str) -> None:
        if not is_transient(error):
            raise error
        log.warning("PostgreSQL unavailable while %s: %s", doing, error.__class__.__name__)

    def _release_quietly(self, leg_ids: list[str]) -> None:
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            self.limits.release_leases(self.trunk.name, leg_ids)

    # --- maintenance: recovery, broker resets, outbox purge ----------------------------------

    def _maintain_forever(self, interval: float) -> None:
        while not self._stop_maintenance.wait(interval):
            try:
                self.maintain()
            except Exception as error:
                log.warning("maintenance round failed: %s", error)

    def maintain(self) -> None:
        """One round: end dead owners' legs, re-publish dials a broker reset lost."""
        try:
            owners = self.repository.run(live_owners, self.trunk.name, self.owner)
            for dead in self.owner_watch.dead(owners):
                self.recover_owner(dead)
        except REDIS_UNAVAILABLE as error:
            log.warning("recovery check skipped, Redis unavailable: %s", error)
        if self.broker_watch is not None:
            try:
                if self.broker_watch.reset_detected():
                    self.requeue_queued()
            except REDIS_UNAVAILABLE as error:
                log.warning("broker check skipped, Redis unavailable: %s", error)
        if time.monotonic() >= self._next_purge:
            # Published events are kept two days: recovery reads a live leg's last seq from
            # them, and no leg lives longer than a day (dial_fields caps every duration).
            self._next_purge = time.monotonic() + 600
            purged = self.repository.purge_published(time.time() - 2 * 86400)
            if purged:
                log.info("purged %d published outbox events", purged)

    def requeue_queued(self, chunk: int = 100) -> int:
        """Publish dial messages again for every queued leg of the trunk, a batch message per
        `chunk` legs (duplicates lose the claim; lost messages are replaced)."""
        legs = self.repository.run(queued_legs, self.trunk.name)
        if not legs or self.app is None:
            return 0
        queue = dial_queue_name(self.trunk.name)
        for start in range(0, len(legs), chunk):
            self.app.send_task(
                DIAL_BATCH_TASK,
                kwargs={"trunk": self.trunk.name,
                        "legs": [list(leg) for leg in legs[start:start + chunk]],
                        "enqueued_at": None},
                queue=queue, routing_key=queue, ignore_result=True,
            )
        self.stats["requeued"] += len(legs)
        log.warning("broker was reset: re-published %d queued dial(s) of %s",
                    len(legs), self.trunk.name)
        return len(legs)

    def recover_owner(self, dead: str) -> list[str]:
        """Adopt a dead owner's legs and end each one; returns the adopted leg ids."""
        adopted = self.repository.run(adopt, dead, self.owner)
        self.owner_watch.forget(dead)
        self.publisher.defer()  # its unpublished events (now ours) go out before the ends
        if not adopted:
            return []
        log.warning("owner %s is dead: ending its %d leg(s)", dead, len(adopted))
        for leg in adopted:
            self._end_recovered(dead, leg)
        self.stats["recovered"] += len(adopted)
        return [leg.leg_id for leg in adopted]

    def _end_recovered(self, dead: str, leg: RecoveredLeg) -> None:
        context = LegContext(
            leg_id=leg.leg_id, trunk=leg.trunk, correlation_id=leg.correlation_id,
            scenario=leg.scenario, to_uri=leg.request_uri, call_id=leg.call_id or "",
            seq=leg.last_seq, started_at=leg.invited_at,
            first_provisional_at=leg.first_provisional_at, answered_at=leg.answered_at,
            established=leg.state == LegState.ESTABLISHED,
        )
        reason = f"owner worker {dead} died; ended by recovery"
        log.info("recovery: ending a %s leg of dead worker %s", leg.state.value, dead,
                 extra=leg_fields(context))
        snapshot = leg.snapshot
        if snapshot is not None and leg.state != LegState.CLAIMED:
            if leg.state == LegState.ESTABLISHED or leg.answered_at is not None:
                snapshot = dataclasses.replace(
                    snapshot, state="established",
                    answered_at=snapshot.answered_at or leg.answered_at,
                )
                snapshot = recovery_cseq(snapshot, time.time())
            self.book.register(context)
            try:
                self.signaling.call(self.signaling.manager.end_recovered, snapshot).result(10)
                return
            except Exception as error:
                log.error("recovery signaling failed: %s", error, extra=leg_fields(context))
                self.book.forget(context)
        # No INVITE on record (or signaling refused): nothing to CANCEL or BYE from here.
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="failed" if leg.answered_at is None else "ended",
            reason=reason + " before its INVITE was recorded" if snapshot is None else reason,
            disposition=Disposition.FAILED if leg.answered_at is None else Disposition.ANSWERED,
        ))


def _render_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
