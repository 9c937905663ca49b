"""Prometheus metrics of a worker: one registry object the worker passes around, one HTTP server."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Queue wait is the time from enqueue_dial to the claim: milliseconds normally, minutes when a
# trunk is backed up, so the buckets span both.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

CPS_WINDOW_SECONDS = 10.0


class CallRateMeter:
    """Calls per second over a sliding window; the clock is injected so tests control it."""

    def __init__(
        self, window: float = CPS_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window <= 0:
            raise ValueError(f"CPS window must be positive, got {window}")
        self._window = window
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def mark(self) -> None:
        with self._lock:
            now = self._clock()
            self._stamps.append(now)
            self._expire(now)

    def rate(self) -> float:
        with self._lock:
            self._expire(self._clock())
            return len(self._stamps) / self._window

    def _expire(self, now: float) -> None:
        horizon = now - self._window
        while self._stamps and self._stamps[0] <= horizon:
            self._stamps.popleft()


@dataclass(frozen=True, slots=True)
class SipStartLine:
    """What metrics need of a message: the request method, or the response status + CSeq method."""

    method: str
    status: int | None


def peek_start_line(data: bytes) -> SipStartLine | None:
    """Read the method or status without a full parse; None for bytes that are not SIP."""
    line_end = data.find(b"\r\n")
    first = data[: line_end if line_end >= 0 else len(data)]
    if first.startswith(b"SIP/2.0 "):
        code = first[8:11]
        if len(code) != 3 or not code.isdigit():
            return None
        return SipStartLine(method=_cseq_method(data), status=int(code))
    parts = first.split(b" ", 2)
    if len(parts) != 3 or not parts[2].startswith(b"SIP/") or not parts[0].isalpha():
        return None
    return SipStartLine(method=parts[0].decode("ascii").upper(), status=None)


def _cseq_method(data: bytes) -> str:
    head_end = data.find(b"\r\n\r\n")
    head = data[: head_end if head_end >= 0 else len(data)]
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"cseq":
            tokens = value.split()
            if len(tokens) == 2 and tokens[1].isalpha():
                return tokens[1].decode("ascii").upper()
            return "unknown"
    return "unknown"


class WorkerMetrics:
    """Every metric a worker exports, labelled by trunk; created once per process."""

    def __init__(
        self,
        trunk: str,
        registry: CollectorRegistry | None = None,
        *,
        rate_meter: CallRateMeter | None = None,
    ) -> None:
        self.trunk = trunk
        self.registry = registry if registry is not None else CollectorRegistry()
        self._rate = rate_meter if rate_meter is not None else CallRateMeter()
        self._synced_core_counters: dict[str, int] = {}
        r = self.registry
        self.dials = Counter(
            "outbound_dials_total", "Dials that reached an end, by disposition",
            ["trunk", "disposition"], registry=r,
        )
        self.dials_started = Counter(
            "outbound_dials_started_total", "INVITEs sent for new legs", ["trunk"], registry=r
        )
        self.active_legs = Gauge(
            "outbound_active_legs", "Legs between INVITE and their end", ["trunk"], registry=r
        )
        self.cps = Gauge(
            "outbound_calls_per_second",
            f"New legs per second over the last {CPS_WINDOW_SECONDS:g} s",
            ["trunk"], registry=r,
        )
        self.cps.labels(trunk).set_function(self._rate.rate)
        self.sip_requests = Counter(
            "outbound_sip_requests_total", "SIP requests by direction and method",
            ["trunk", "direction", "method"], registry=r,
        )
        self.sip_responses = Counter(
            "outbound_sip_responses_total", "SIP responses by direction, CSeq method and status",
            ["trunk", "direction", "method", "status"], registry=r,
        )
        self.retransmissions = Counter(
            "outbound_sip_retransmissions_total", "SIP messages sent again by timers",
            ["trunk"], registry=r,
        )
        self.parse_errors = Counter(
            "outbound_sip_parse_errors_total", "Datagrams or stream data that were not valid SIP",
            ["trunk"], registry=r,
        )
        self.queue_wait = Histogram(
            "outbound_queue_wait_seconds", "Time from enqueue_dial to the worker's claim",
            ["trunk"], buckets=QUEUE_WAIT_BUCKETS, registry=r,
        )
        self.event_backlog = Gauge(
            "outbound_event_publish_backlog", "Events in the outbox waiting for Redis",
            ["trunk"], registry=r,
        )
        self.cdr_backlog = Gauge(
            "outbound_cdr_write_backlog", "CDRs waiting to be written to PostgreSQL",
            ["trunk"], registry=r,
        )
        # Touch the unlabelled-by-value series so a fresh worker exports zeros, not nothing.
        for metric in (self.dials_started, self.active_legs, self.retransmissions,
                       self.parse_errors, self.event_backlog, self.cdr_backlog):
            metric.labels(trunk)

    def leg_started(self) -> None:
        self.dials_started.labels(self.trunk).inc()
        self.active_legs.labels(self.trunk).inc()
        self._rate.mark()

    def leg_ended(self, disposition: str) -> None:
        self.dials.labels(self.trunk, disposition).inc()
        self.active_legs.labels(self.trunk).dec()

    def sip_message(self, data: bytes, *, direction: str) -> None:
        """Count one SIP message; `direction` is 'in' or 'out'. Non-SIP bytes count as parse errors
        only on the way in."""
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        line = peek_start_line(data)
        if line is None:
            if direction == "in":
                self.parse_errors.labels(self.trunk).inc()
            return
        if line.status is None:
            self.sip_requests.labels(self.trunk, direction, line.method).inc()
        else:
            self.sip_responses.labels(
                self.trunk, direction, line.method, str(line.status)
            ).inc()

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.labels(self.trunk).observe(max(0.0, seconds))

    def set_event_backlog(self, size: int) -> None:
        self.event_backlog.labels(self.trunk).set(size)

    def set_cdr_backlog(self, size: int) -> None:
        self.cdr_backlog.labels(self.trunk).set(size)

    def watch_backlogs(
        self, *, cdr_backlog: Callable[[], int], event_backlog: Callable[[], int]
    ) -> None:
        """Read both backlogs when Prometheus scrapes, instead of setting them in a loop."""
        self.cdr_backlog.labels(self.trunk).set_function(cdr_backlog)
        self.event_backlog.labels(self.trunk).set_function(event_backlog)

    def sync_core_stats(self, stats: Mapping[str, int]) -> None:
        """Fold the sans-IO core's running totals (retransmissions, parse_errors) into counters.

        The core keeps cumulative integers; only the increase since the last sync is added.
        """
        for key, counter in (("retransmissions", self.retransmissions),
                             ("parse_errors", self.parse_errors)):
            total = int(stats.get(key, 0))
            increase = total - self._synced_core_counters.get(key, 0)
            if increase > 0:
                counter.labels(self.trunk).inc(increase)
            self._synced_core_counters[key] = max(total, self._synced_core_counters.get(key, 0))


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The running exporter; `port` is the bound one (useful when 0 asked for a free port)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    port: int, registry: CollectorRegistry, *, host: str = "0.0.0.0"
) -> MetricsServer:
    """Serve /metrics for `registry` on host:port in a daemon thread."""
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be 0..65535, got {port}")
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server=server, thread=thread)
