"""Worker metrics: SIP message counting, CPS window, core totals read at scrape time, the
/metrics endpoint."""

from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from sipstack.core_output import CoreStats
from sipstack.message import Request, make_response
from workers.observability.metrics import (
    CallRateMeter,
    SipStartLine,
    WorkerMetrics,
    peek_start_line,
    start_metrics_server,
)


def invite() -> Request:
    return Request("INVITE", "sip:+1555@carrier.test", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKm1"),
        ("From", "<sip:a@x>;tag=1"), ("To", "<sip:+1555@carrier.test>"),
        ("Call-ID", "m1@test"), ("CSeq", "1 INVITE"),
    ])


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"trunk": metrics.trunk, **labels})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sip_messages_are_counted_by_method_and_status() -> None:
    metrics = WorkerMetrics("carrier-a")
    request = invite()
    metrics.sip_message(request.to_bytes(), direction="out")
    metrics.sip_message(request.to_bytes(), direction="out")
    metrics.sip_message(make_response(request, 180, to_tag="t").to_bytes(), direction="in")
    metrics.sip_message(make_response(request, 486, to_tag="t").to_bytes(), direction="in")
    assert sample(metrics, "outbound_sip_requests_total", direction="out", method="INVITE") == 2
    assert sample(metrics, "outbound_sip_responses_total", direction="in", method="INVITE",
                  status="486") == 1
    assert sample(metrics, "outbound_sip_responses_total", direction="in", method="INVITE",
                  status="180") == 1
    assert sample(metrics, "outbound_sip_requests_total", direction="in", method="INVITE") is None
    metrics.sip_message(b"\x16\x03\x01 not sip", direction="in")  # left to the core's count
    assert sample(metrics, "outbound_sip_parse_errors_total") == 0
    with pytest.raises(ValueError, match="direction"):
        metrics.sip_message(b"", direction="sideways")


def test_methods_a_peer_invents_share_one_series() -> None:
    metrics = WorkerMetrics("t")
    for name in ("FOO", "BAR", "BAZ"):
        metrics.sip_message(f"{name} sip:x@y SIP/2.0\r\n\r\n".encode(), direction="in")
    metrics.sip_message(b"SIP/2.0 200 OK\r\nCSeq: 1 WHATEVER\r\n\r\n", direction="in")
    assert sample(metrics, "outbound_sip_requests_total", direction="in", method="other") == 3
    assert sample(metrics, "outbound_sip_responses_total", direction="in", method="other",
                  status="200") == 1


def test_peek_start_line_reads_method_status_and_cseq_method() -> None:
    request = invite()
    assert peek_start_line(request.to_bytes()).method == "INVITE"  # type: ignore[union-attr]
    response = make_response(request, 200).to_bytes().replace(b"CSeq", b"cseq")
    line = peek_start_line(response)
    assert line is not None and (line.method, line.status) == ("INVITE", 200)
    assert peek_start_line(make_response(request, 487).to_bytes()) == SipStartLine("INVITE", 487)
    assert peek_start_line(b"SIP/2.0 200 OK\r\nCSeq: 2\r\n\r\n") == SipStartLine("unknown", 200)
    assert peek_start_line(b"SIP/2.0 2x0 OK\r\n\r\n") is None
    assert peek_start_line(b"HELLO\r\n") is None
    assert peek_start_line(b"BYE sip:a@b HTTP/1.1\r\n\r\n") is None


def test_dials_active_legs_and_calls_per_second() -> None:
    clock = Clock()
    metrics = WorkerMetrics("t", rate_meter=CallRateMeter(window=10, clock=clock))
    live = ["a", "b"]
    metrics.watch_active_legs(lambda: len(live))
    for _ in range(30):
        metrics.leg_started()
    metrics.leg_ended("answered")
    metrics.leg_ended("busy")
    metrics.leg_ended("busy")
    assert sample(metrics, "outbound_active_legs") == 2
    live.pop()
    assert sample(metrics, "outbound_active_legs") == 1
    assert sample(metrics, "outbound_dials_total", disposition="busy") == 2
    assert sample(metrics, "outbound_dials_total", disposition="answered") == 1
    assert sample(metrics, "outbound_dials_started_total") == 30
    assert sample(metrics, "outbound_calls_per_second") == pytest.approx(3.0)
    clock.now += 10.0
    assert sample(metrics, "outbound_calls_per_second") == 0.0


def test_core_totals_are_read_at_scrape_time_and_never_go_back() -> None:
    metrics = WorkerMetrics("t")
    assert sample(metrics, "outbound_sip_retransmissions_total") == 0
    stats = CoreStats(retransmissions=4, parse_errors=1)
    framing = {"stream_framing_errors": 2}
    metrics.watch_core_stats(lambda: {**stats.as_dict(), **framing})
    assert sample(metrics, "outbound_sip_retransmissions_total") == 4
    assert sample(metrics, "outbound_sip_parse_errors_total") == 3
    stats.retransmissions = 10
    assert sample(metrics, "outbound_sip_retransmissions_total") == 10

    def gone() -> dict[str, int]:
        raise RuntimeError("LegManager.start() has not been awaited")

    metrics.watch_core_stats(gone)  # a stopped runtime: the last totals stay
    assert sample(metrics, "outbound_sip_retransmissions_total") == 10
    metrics.watch_core_stats(lambda: {"retransmissions": 1})  # a counter never goes back
    assert sample(metrics, "outbound_sip_retransmissions_total") == 10


def test_backlogs_and_queue_wait() -> None:
    metrics = WorkerMetrics("t")
    metrics.set_event_backlog(12)
    metrics.set_cdr_backlog(3)
    metrics.observe_queue_wait(0.2)
    metrics.observe_queue_wait(-1)  # clock skew between hosts is clamped, not a negative wait
    assert sample(metrics, "outbound_event_publish_backlog") == 12
    assert sample(metrics, "outbound_cdr_write_backlog") == 3
    assert sample(metrics, "outbound_queue_wait_seconds_count") == 2
    assert sample(metrics, "outbound_queue_wait_seconds_sum") == pytest.approx(0.2)


def test_metrics_server_serves_the_registry_over_http() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics("trunk-x", registry)
    metrics.leg_started()
    metrics.watch_active_legs(lambda: 1)
    server = start_metrics_server(0, registry, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.stop()
    assert 'outbound_active_legs{trunk="trunk-x"} 1.0' in text
    assert "outbound_sip_retransmissions_total" in text
    with pytest.raises(ValueError, match="metrics port"):
        start_metrics_server(70000, registry)


def test_rate_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        CallRateMeter(window=0)


def test_backlogs_can_be_read_at_scrape_time() -> None:
    metrics = WorkerMetrics("t")
    pending = [3]
    metrics.watch_backlogs(cdr_backlog=lambda: pending[0], event_backlog=lambda: 7)
    assert sample(metrics, "outbound_cdr_write_backlog") == 3
    pending[0] = 0
    assert sample(metrics, "outbound_cdr_write_backlog") == 0
    assert sample(metrics, "outbound_event_publish_backlog") == 7

    def down() -> int:
        raise ConnectionError("PostgreSQL is down")

    metrics.watch_backlogs(cdr_backlog=lambda: 1, event_backlog=down)
    assert math.isnan(sample(metrics, "outbound_event_publish_backlog") or 0.0)  # no failed scrape
