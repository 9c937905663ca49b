"""A 503/429's Retry-After reaches the back-pressure: the core keeps it on the CdrRecord (and
so on the LegFailed event), and the worker's terminal stream event carries it as an OUTCOME
field (RFC 3261 §20.33: delta-seconds, comment and params ignored)."""

from __future__ import annotations

import uuid

import pytest

from sipstack.events import LegFailed
from tests.fakes import FarEnd, Harness
from workers.coordination.backpressure import retry_after_seconds
from workers.events.entries import OUTCOME_FIELDS, StreamEvent
from workers.runtime.book import LegBook, LegContext


@pytest.mark.parametrize(
    ("status", "header", "seconds"),
    [(503, "120 (overloaded);duration=60", 120.0), (429, "5", 5.0), (503, None, None),
     (486, None, None)],
)
def test_the_failures_retry_after_is_on_the_cdr_and_the_event(
    status: int, header: str | None, seconds: float | None
) -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial()
    headers = [] if header is None else [("Retry-After", header)]
    h.deliver(far.respond(h.last("INVITE"), status, headers=headers))
    failed = h.terminal(call_id)
    assert isinstance(failed, LegFailed)
    assert failed.cdr.retry_after == seconds and failed.retry_after == seconds
    assert failed.cdr.final_status_code == status
    assert retry_after_seconds(header) == seconds  # the back-pressure reads it the same way


def test_the_terminal_stream_event_carries_retry_after_and_round_trips() -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), 503, headers=[("Retry-After", "30")]))
    failed = h.terminal(call_id)
    book = LegBook("w1", trunk="t1")
    context = book.register(LegContext(
        leg_id=str(uuid.uuid4()), trunk="t1", correlation_id=failed.correlation_id,
        scenario="campaign", to_uri="sip:b@h",
    ))  # fmt: skip
    context.call_id = failed.call_id
    pending = book.pending_for(failed)
    assert pending is not None
    fields = pending.event.fields()
    assert "retry_after" in OUTCOME_FIELDS
    assert fields["retry_after"] == "30" and fields["final_status_code"] == "503"
    assert StreamEvent.from_fields(fields) == pending.event
    assert StreamEvent.from_json(pending.event.to_json()) == pending.event
    assert pending.event.outcome is not None and pending.event.outcome["retry_after"] == "30"
