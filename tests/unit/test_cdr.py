"""The CDR record's derived figures (billsec, duration_ms) and the disposition buckets."""

from __future__ import annotations

import pytest

from sipstack.cdr import (
    CdrRecord,
    Disposition,
    HangupBy,
    HangupReason,
    billable_seconds,
    classify_disposition,
)
from tests.fakes import FarEnd, Harness, establish

ANSWERED = 1_700_000_000.0


@pytest.mark.parametrize(
    ("answered_for", "billsec"),
    [
        (0.0, 0),
        (0.001, 0),
        (0.49, 0),
        (0.5, 1),
        (1.0, 1),
        (1.02, 1),
        (1.499, 1),
        (1.5, 2),
        (2.4999999999, 3),  # within a microsecond of 2.5: float noise, not a shorter call
        (30.5, 31),
        (60.2, 60),
    ],
)
def test_billsec_is_the_answered_time_rounded_half_up(answered_for: float, billsec: int) -> None:
    assert billable_seconds(ANSWERED, ANSWERED + answered_for) == billsec


def test_billsec_is_zero_when_never_answered_or_ended_before_the_answer() -> None:
    assert billable_seconds(None, ANSWERED + 10) == 0
    assert billable_seconds(ANSWERED, ANSWERED - 1) == 0


def test_duration_ms_keeps_the_precision_billsec_rounds_away() -> None:
    record = CdrRecord(
        call_id="c",
        correlation_id="k",
        scenario="campaign",
        trunk="t",
        from_uri="sip:a@b",
        to_uri="sip:c@d",
        started_at=ANSWERED - 3.25,
        first_provisional_at=ANSWERED - 2.0,
        answered_at=ANSWERED,
        ended_at=ANSWERED + 1.02,
        final_status_code=200,
        disposition=Disposition.ANSWERED,
        hangup_reason=HangupReason.NORMAL,
        hangup_by=HangupBy.LOCAL,
    )
    assert (record.billsec, record.duration_ms) == (1, 4270)


def test_a_call_held_1_02_seconds_bills_one_second() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.advance(1.02)
    h.core.bye(call_id, h.now)
    h.flush()
    h.deliver(far.respond(h.last("BYE"), 200))
    cdr = h.terminal(call_id).cdr
    assert cdr.billsec == 1
    assert cdr.ended_at - cdr.answered_at == pytest.approx(1.02)


@pytest.mark.parametrize(
    ("status", "cancelled", "ring_timeout", "disposition"),
    [
        (200, True, True, Disposition.ANSWERED),
        (487, True, True, Disposition.NO_ANSWER),
        (487, True, False, Disposition.CANCELLED),
        (None, False, False, Disposition.CONGESTION),
        (486, False, False, Disposition.BUSY),
        (600, False, False, Disposition.BUSY),
        (480, False, False, Disposition.NO_ANSWER),
        (603, False, False, Disposition.REJECTED),
        (503, False, False, Disposition.CONGESTION),
        (404, False, False, Disposition.FAILED),
    ],
)
def test_disposition_buckets(
    status: int | None, cancelled: bool, ring_timeout: bool, disposition: Disposition
) -> None:
    assert (
        classify_disposition(status, cancel_requested=cancelled, ring_timeout=ring_timeout)
        is disposition
    )
