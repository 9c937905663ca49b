"""WorkerObservability without a running worker: what a leg event and a claim do to the
metrics and the call log lines."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from sipstack.cdr import Disposition
from workers.events.stream import StreamEvent
from workers.observability.attach import WorkerObservability
from workers.observability.metrics import WorkerMetrics
from workers.runtime.book import LegBook, LegContext, PendingEvent


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"trunk": metrics.trunk, **labels})


def leg(book: LegBook) -> LegContext:
    return book.register(LegContext(
        leg_id=str(uuid.uuid4()), trunk="t1", correlation_id=f"k-{uuid.uuid4().hex[:6]}",
        scenario="campaign", to_uri="sip:+1555@carrier.test",
    ))


def event(context: LegContext, state: str, status: int | None = None) -> PendingEvent:
    context.call_id = context.call_id or f"{uuid.uuid4().hex}@test"
    stream = StreamEvent(
        trunk=context.trunk, leg_id=context.leg_id, seq=context.next_seq(), state=state,
        call_id=context.call_id, correlation_id=context.correlation_id,
        scenario=context.scenario, status_code=status, reason="Ringing" if status else "",
        at=time.time(),
    )
    return PendingEvent(context, stream, None)


def test_a_call_is_started_and_ended_once_with_its_fields_on_each_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = WorkerMetrics("t1")
    observability = WorkerObservability("t1", metrics)
    book = LegBook("w1", trunk="t1")
    context = leg(book)
    caplog.set_level(logging.DEBUG, logger="workers.calls")
    observability.recorded(event(context, "invited"))
    observability.recorded(event(context, "provisional", 180))
    context.answered_at, context.established = time.time(), True  # as its 200 would
    observability.recorded(book.synthetic_end(
        context, at=time.time(), state="ended", reason="dropped by the worker at shutdown",
        disposition=Disposition.ANSWERED))
    assert sample(metrics, "outbound_dials_started_total") == 1
    assert sample(metrics, "outbound_dials_total", disposition="answered") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "INVITE sent to sip:+1555@carrier.test", "provisional 180 (Ringing)",
        "call ended: answered 200, hung up by local (dropped by the worker at shutdown)",
    ]
    for record in caplog.records:
        assert (record.call_id, record.correlation_id, record.trunk, record.leg_id) == (  # type: ignore[attr-defined]
            context.call_id, context.correlation_id, "t1", context.leg_id)
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].disposition == "answered"  # type: ignore[attr-defined]


def test_a_leg_that_never_got_its_invite_counts_as_a_failed_dial_not_a_started_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = WorkerMetrics("t1")
    observability = WorkerObservability("t1", metrics)
    book = LegBook("w1", trunk="t1")
    context = leg(book)
    caplog.set_level(logging.INFO, logger="workers.calls")
    observability.recorded(book.synthetic_end(
        context, at=time.time(), state="failed", reason="INVITE not sent: bad target",
        disposition=Disposition.FAILED))
    assert sample(metrics, "outbound_dials_started_total") == 0
    assert sample(metrics, "outbound_dials_total", disposition="failed") == 1
    (line,) = caplog.records
    call_id = line.call_id  # type: ignore[attr-defined]
    assert call_id.endswith("@no-invite.invalid") and call_id == context.call_id  # the CDR's


def test_queue_wait_is_observed_once_per_claimed_leg() -> None:
    metrics = WorkerMetrics("t1")
    observability = WorkerObservability("t1", metrics)
    observability.claimed(3, time.time() - 2.0)
    observability.claimed(2, None)  # a message from an old client says nothing
    observability.claimed(0, time.time())
    assert sample(metrics, "outbound_queue_wait_seconds_count") == 3
    assert sample(metrics, "outbound_queue_wait_seconds_sum") == pytest.approx(6.0, abs=0.5)


def test_without_metrics_only_lines_are_written(caplog: pytest.LogCaptureFixture) -> None:
    observability = WorkerObservability("t1")
    book = LegBook("w1", trunk="t1")
    context = leg(book)
    caplog.set_level(logging.INFO, logger="workers.calls")
    observability.recorded(event(context, "invited"))
    observability.claimed(1, time.time())
    observability.recorded(book.synthetic_end(
        context, at=time.time(), state="failed", reason="no answer",
        disposition=Disposition.FAILED))
    assert [r.getMessage() for r in caplog.records] == ["call failed: failed (no answer)"]
