"""Prometheus metrics of a worker: one registry object the worker passes around, one HTTP server.

Counts the signaling loop produces for every message are plain dict increments, read when
Prometheus scrapes (a labelled prometheus_client counter takes two locks per increment);
totals other objects already keep (the core's retransmissions, the recorder's backlog) are
read at scrape time too, so nothing has to be kept in sync.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Queue wait is the time from enqueue_dial to the claim: milliseconds normally, minutes when a
# trunk is backed up, so the buckets span both.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

CPS_WINDOW_SECONDS = 10.0

# The core's totals behind the SIP error counters (workers.signaling.manager.all_stats keys).
RETRANSMISSION_STATS = ("retransmissions",)
PARSE_ERROR_STATS = ("parse_errors", "stream_framing_errors")


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

    def mark(self, count: int = 1) -> None:
        with self._lock:
            now = self._clock()
            self._stamps.extend([now] * count)
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
    key = message_key(data)
    if key is None:
        return None
    method, status = key
    return SipStartLine(method=method, status=int(status) if status else None)


def message_key(data: bytes) -> tuple[str, str] | None:
    """(method, status) of a message, status "" for a request; None for bytes that are not SIP.

    A response's method is its CSeq method. Only the start line and the CSeq line are read.
    """
    line_end = data.find(b"\r\n")
    first = data[: line_end if line_end >= 0 else len(data)]
    if first.startswith(b"SIP/2.0 "):
        code = first[8:11]
        if len(code) != 3 or not code.isdigit():
            return None
        return _cseq_method(data), code.decode("ascii")
    space = first.find(b" ")
    if space <= 0 or not first.endswith(b" SIP/2.0") or not first[:space].isalpha():
        return None
    return first[:space].decode("ascii").upper(), ""


def _cseq_method(data: bytes) -> str:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        head_end = len(data)
    start = data.find(b"\r\nCSeq:", 0, head_end)  # how nearly every peer writes it
    if start >= 0:
        end = data.find(b"\r\n", start + 7)
        return _method_of_cseq(data[start + 7: end if 0 <= end <= head_end else head_end])
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"cseq":
            return _method_of_cseq(value)
    return "unknown"


def _method_of_cseq(value: bytes) -> str:
    tokens = value.split()
    if len(tokens) == 2 and tokens[1].isalpha():
        return tokens[1].decode("ascii").upper()
    return "unknown"


# Methods get their own label value; anything else a peer invents is "other", so a hostile
# peer cannot grow the number of series.
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK", "REFER", "NOTIFY",
    "SUBSCRIBE", "MESSAGE", "REGISTER", "PUBLISH",
})


class SipMessageCounts:
    """SIP messages by direction, method and status, counted by one thread (the signaling
    loop) and read by another (the scrape): a dict copy is one step under the GIL."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}

    def count(self, data: bytes, direction: str) -> None:
        key = message_key(data)
        if key is None:
            return  # not SIP: the core counts it as a parse error
        method = key[0] if key[0] in KNOWN_METHODS else "other"
        counted = (direction, method, key[1])
        self._counts[counted] = self._counts.get(counted, 0) + 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        """{(direction, method, status): count}; status "" for requests."""
        return self._counts.copy()


class _SipCollector(Collector):
    """SIP message counts and the core's error totals, read at scrape time."""

    def __init__(self, trunk: str, counts: SipMessageCounts) -> None:
        self._trunk = trunk
        self._counts = counts
        self._stats: Callable[[], Mapping[str, int]] | None = None
        self._last_stats: dict[str, int] = {}

    def watch(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats

    def _families(self) -> tuple[CounterMetricFamily, ...]:
        return (
            CounterMetricFamily(
                "outbound_sip_requests", "SIP requests by direction and method (retransmissions "
                "included)", labels=["trunk", "direction", "method"],
            ),
            CounterMetricFamily(
                "outbound_sip_responses", "SIP responses by direction, CSeq method and status",
                labels=["trunk", "direction", "method", "status"],
            ),
            CounterMetricFamily(
                "outbound_sip_retransmissions", "SIP messages sent again by timers",
                labels=["trunk"],
            ),
            CounterMetricFamily(
                "outbound_sip_parse_errors", "Received datagrams or stream data that were not "
                "valid SIP", labels=["trunk"],
            ),
        )

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests, responses, retransmissions, parse_errors = self._families()
        for (direction, method, status), count in sorted(self._counts.snapshot().items()):
            if status:
                responses.add_metric([self._trunk, direction, method, status], count)
            else:
                requests.add_metric([self._trunk, direction, method], count)
        stats = self._read_stats()
        retransmissions.add_metric(
            [self._trunk], sum(stats.get(key, 0) for key in RETRANSMISSION_STATS))
        parse_errors.add_metric([self._trunk], sum(stats.get(key, 0) for key in PARSE_ERROR_STATS))
        return iter((requests, responses, retransmissions, parse_errors))

    def _read_stats(self) -> dict[str, int]:
        """The core's totals; never lower than last time (a counter must not go back)."""
        if self._stats is not None:
            try:
                current = self._stats()
            except Exception as error:  # a scrape must not fail because the runtime stopped
                log.debug("core stats unavailable: %s", error)
                current = {}
            for key in (*RETRANSMISSION_STATS, *PARSE_ERROR_STATS):
                value = int(current.get(key, 0))
                if value > self._last_stats.get(key, 0):
                    self._last_stats[key] = value
        return self._last_stats


def _safe(read: Callable[[], float], name: str) -> Callable[[], float]:
    """A gauge function that reports NaN instead of failing the scrape."""

    def value() -> float:
        try:
            return float(read())
        except Exception as error:
            log.debug("%s unavailable: %s", name, error)
            return math.nan

    return value


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
        self.sip_messages = SipMessageCounts()
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
        self._sip = _SipCollector(trunk, self.sip_messages)
        r.register(self._sip)
        self.queue_wait = Histogram(
            "outbound_queue_wait_seconds", "Time from enqueue_dial to the worker's claim",
            ["trunk"], buckets=QUEUE_WAIT_BUCKETS, registry=r,
        )
        self.event_backlog = Gauge(
            "outbound_event_publish_backlog", "Events stored in PostgreSQL, not yet in Redis",
            ["trunk"], registry=r,
        )
        self.cdr_backlog = Gauge(
            "outbound_cdr_write_backlog",
            "Leg events and CDRs waiting to be written to PostgreSQL", ["trunk"], registry=r,
        )
        # The children, looked up once: the hot paths skip the labels() lookup and its lock.
        self._dials_started = self.dials_started.labels(trunk)
        self._queue_wait = self.queue_wait.labels(trunk)
        self._dials_by_disposition: dict[str, Counter] = {}
        for metric in (self.active_legs, self.event_backlog, self.cdr_backlog):
            metric.labels(trunk)  # a fresh worker exports zeros, not nothing

    def leg_started(self) -> None:
        self._dials_started.inc()
        self._rate.mark()

    def leg_ended(self, disposition: str) -> None:
        child = self._dials_by_disposition.get(disposition)
        if child is None:
            child = self._dials_by_disposition[disposition] = self.dials.labels(
                self.trunk, disposition)
        child.inc()

    def sip_message(self, data: bytes, *, direction: str) -> None:
        """Count one SIP message; `direction` is 'in' or 'out'. Bytes that are not SIP are
        left to the core, which counts them as parse errors."""
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        self.sip_messages.count(data, direction)

    def observe_queue_wait(self, seconds: float, count: int = 1) -> None:
        """`count` dials claimed `seconds` after they were enqueued (clock skew: 0)."""
        wait = max(0.0, seconds)
        for _ in range(count):
            self._queue_wait.observe(wait)

    def set_event_backlog(self, size: int) -> None:
        self.event_backlog.labels(self.trunk).set(size)

    def set_cdr_backlog(self, size: int) -> None:
        self.cdr_backlog.labels(self.trunk).set(size)

    def watch_backlogs(
        self, *, cdr_backlog: Callable[[], float], event_backlog: Callable[[], float]
    ) -> None:
        """Read both backlogs when Prometheus scrapes, instead of setting them in a loop."""
        self.cdr_backlog.labels(self.trunk).set_function(_safe(cdr_backlog, "CDR backlog"))
        self.event_backlog.labels(self.trunk).set_function(_safe(event_backlog, "event backlog"))

    def watch_active_legs(self, count: Callable[[], float]) -> None:
        self.active_legs.labels(self.trunk).set_function(_safe(count, "active legs"))

    def watch_core_stats(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Read the core's running totals (retransmissions, parse errors) at scrape time."""
        self._sip.watch(stats)


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
    """Serve /metrics for `registry` on host:port in a daemon thread (OSError if taken)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be 0..65535, got {port}")
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server=server, thread=thread)
