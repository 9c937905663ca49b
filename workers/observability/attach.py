"""A worker's metrics and per-call log lines, attached to its runtime from one place.

The runtime calls three methods: `attach` once its signaling loop runs (before the first
dial), `claimed` when a dial task wins legs, and `recorded` for every leg event on its way to
PostgreSQL (the core's events and the ends the worker makes up itself: a leg that failed
before its INVITE, a dead worker's leg ended by recovery). Everything else is read when
Prometheus scrapes: live legs, the core's totals, the recorder's and the outbox's backlogs.

Log lines: one INFO line per call when it ends (disposition, status, who hung up, duration),
DEBUG lines for each other event; each carries call_id, correlation_id, trunk and leg_id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from workers.observability.log_format import call_fields
from workers.observability.metrics import WorkerMetrics

if TYPE_CHECKING:
    from sipstack.transport import Address, Transport
    from workers.runtime.book import LegContext, PendingEvent

SignalingTap = Callable[[bytes, "Transport", "Address"], None]


class ObservedRuntime(Protocol):
    """What observability reads of a running worker (workers.runtime.observed.ObservedWorker
    gives it), so it needs nothing of the runtime's insides: no import of the manager, the
    recorder, the publisher or the repository."""

    def live_leg_count(self) -> int: ...

    def core_stats(self) -> dict[str, int]: ...

    def recorder_backlog(self) -> int: ...

    def events_backlogged(self) -> bool:
        """True while stored events wait for Redis."""
        ...

    def unpublished_events(self) -> int:
        """Events in the outbox not yet on the stream (one query, no retries)."""
        ...

    def subscribe_signaling(self, sent: SignalingTap, received: SignalingTap) -> None:
        """Have `sent`/`received` called for every SIP message (subscribers of the manager's
        hooks, added on its loop)."""
        ...


log = logging.getLogger("workers.calls")

# The outbox count is a query: scrapes closer together than this share one answer.
EVENT_BACKLOG_CACHE_SECONDS = 5.0


def leg_fields(context: LegContext) -> dict[str, str]:
    """`extra=` for a log line about this leg."""
    return call_fields(call_id=context.call_id, correlation_id=context.correlation_id,
                       trunk=context.trunk, leg_id=context.leg_id)


class WorkerObservability:
    """Metrics (when `metrics` is given) and call log lines of one worker runtime."""

    def __init__(self, trunk: str, metrics: WorkerMetrics | None = None) -> None:
        self.trunk = trunk
        self.metrics = metrics
        self._runtime: ObservedRuntime | None = None
        self._event_backlog_lock = threading.Lock()
        self._event_backlog_cached: tuple[float, int] | None = None

    # --- called by the runtime ---------------------------------------------------------------

    def attach(self, runtime: ObservedRuntime) -> None:
        """Read the runtime's live figures at scrape time and count its SIP messages."""
        self._runtime = runtime
        metrics = self.metrics
        if metrics is None:
            return
        metrics.watch_active_legs(runtime.live_leg_count)
        metrics.watch_core_stats(runtime.core_stats)
        metrics.watch_backlogs(cdr_backlog=runtime.recorder_backlog,
                               event_backlog=self._event_backlog)
        count = metrics.sip_messages.count

        def sent(data: bytes, transport: Transport, address: Address) -> None:
            count(data, "out")

        def received(data: bytes, transport: Transport, source: Address) -> None:
            count(data, "in")

        runtime.subscribe_signaling(sent, received)

    def claimed(self, count: int, enqueued_at: float | None) -> None:
        """`count` legs of one dial message were claimed (task thread)."""
        if self.metrics is not None and enqueued_at is not None and count > 0:
            self.metrics.observe_queue_wait(time.time() - enqueued_at, count)

    def recorded(self, pending: PendingEvent) -> None:
        """A leg event is on its way to PostgreSQL (signaling loop or any other thread)."""
        event = pending.event
        state = event.state
        metrics = self.metrics
        if state == "invited":
            if metrics is not None:
                metrics.leg_started()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("INVITE sent to %s", pending.context.to_uri,
                          extra=leg_fields(pending.context))
            return
        if not event.terminal:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s%s%s", state,
                          f" {event.status_code}" if event.status_code is not None else "",
                          f" ({event.reason})" if event.reason else "",
                          extra=leg_fields(pending.context))
            return
        record = pending.cdr.record if pending.cdr is not None else None
        disposition = record.disposition.value if record is not None else state
        if metrics is not None:
            metrics.leg_ended(disposition)
        if not log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, object] = dict(leg_fields(pending.context))
        if record is None:
            log.info("call %s%s", state, f": {event.reason}" if event.reason else "",
                     extra=fields)
            return
        fields.update(disposition=disposition, status_code=record.final_status_code,
                      hangup_by=record.hangup_by.value, hangup_reason=record.hangup_reason.value,
                      duration_ms=record.duration_ms)
        hung_up = f", hung up by {record.hangup_by.value}" if record.answered_at is not None else ""
        log.info("call %s: %s%s%s%s", state, disposition,
                 f" {record.final_status_code}" if record.final_status_code else "", hung_up,
                 f" ({event.reason})" if event.reason else "", extra=fields)

    # --- metrics sources -----------------------------------------------------------------------

    def _event_backlog(self) -> int:
        """Events stored in PostgreSQL that Redis has not got yet: none while the publisher
        keeps up; counted in the outbox (one query per few seconds) while it is behind."""
        runtime = self._runtime
        if runtime is None or not runtime.events_backlogged():
            return 0
        with self._event_backlog_lock:
            now = time.monotonic()
            cached = self._event_backlog_cached
            if cached is not None and now - cached[0] < EVENT_BACKLOG_CACHE_SECONDS:
                return cached[1]
            # One attempt, no retries: a scrape must answer, and NaN says "unknown".
            pending = runtime.unpublished_events()
            self._event_backlog_cached = (now, pending)
            return pending
