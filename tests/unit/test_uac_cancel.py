"""CANCEL (RFC 3261 §9.1) as the reference does it, with its FIXes: queueing, retransmission,
crossing answers, 481s and deadlines, and ring timeouts."""

from __future__ import annotations

import pytest

from sipstack.cdr import Disposition, HangupBy, HangupReason
from sipstack.errors import LocalProtocolError, UnknownLegError
from sipstack.events import AnswerReceived, LegCancelled, LegEnded
from sipstack.message import Request
from sipstack.transport import Transport
from tests.fakes import FarEnd, Harness, core_config, establish


def _cancel_times(h: Harness, since: float) -> list[float]:
    return [round(s.at - since, 6) for s in h.sent_requests("CANCEL")]


def _ringing(h: Harness, far: FarEnd, **dial: object) -> tuple[str, Request]:
    call_id = h.dial(**dial)
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180))
    return call_id, invite


def test_cancel_copies_the_invite_fields() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    h.core.cancel(call_id, h.now)
    h.flush()
    cancel = h.last("CANCEL")
    assert cancel.uri == invite.uri
    assert cancel.header("via") == invite.header("via")
    assert cancel.call_id == invite.call_id
    assert cancel.header("from") == invite.header("from")
    assert cancel.header("to") == invite.header("to") and cancel.to_tag is None
    assert cancel.cseq == (1, "CANCEL")
    assert cancel.header("max-forwards") == "70"
    assert (cancel.header("reason") or "").startswith("Q.850;cause=16")
    assert h.sent_requests("CANCEL")[0].out.address == h.sent_requests("INVITE")[0].out.address


def test_cancel_before_any_provisional_stays_queued_until_one_arrives() -> None:
    """RFC 3261 §9.1: a CANCEL MUST NOT be sent before a provisional; no grace period."""
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    start = h.now
    h.core.cancel(call_id, h.now)
    h.flush()
    h.advance(5.0)
    assert h.sent_requests("CANCEL") == []
    h.deliver(far.respond(h.last("INVITE"), 180))
    assert _cancel_times(h, start) == [5.0]


def test_queued_cancel_with_no_provisional_ever_ends_cancelled_at_timer_b_unsent() -> None:
    h = Harness()
    call_id = h.dial()
    start = h.now
    h.core.cancel(call_id, h.now)
    h.advance(31.9)
    assert h.core.leg_count == 1
    h.advance(0.2)
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.at == pytest.approx(start + 32)
    assert h.sent_requests("CANCEL") == []
    assert cancelled.cdr.disposition is Disposition.CANCELLED


def test_queued_cancel_is_released_by_the_first_provisional() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    start = h.now
    h.core.cancel(call_id, h.now)
    h.advance(0.2)
    h.deliver(far.respond(h.last("INVITE"), 100))
    assert _cancel_times(h, start) == [0.2]
    h.advance(0.5)
    assert _cancel_times(h, start) == [0.2, 0.7]  # Timer E's retransmission, T1 later


def test_cancel_after_provisional_goes_out_at_once_and_a_second_call_is_a_no_op() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = _ringing(h, far)
    h.core.cancel(call_id, h.now)
    h.core.cancel(call_id, h.now)
    assert len(h.flush()) == 1
    assert len(h.sent_requests("CANCEL")) == 1


def test_cancel_errors_for_unknown_and_established_legs() -> None:
    h = Harness()
    far = FarEnd()
    with pytest.raises(UnknownLegError, match="unknown call-id"):
        h.core.cancel("nope", h.now)
    call_id, _ = establish(h, far)
    with pytest.raises(LocalProtocolError, match="already established; use BYE"):
        h.core.cancel(call_id, h.now)


def test_cancel_retransmits_at_t1_doubling_to_t2_until_its_final_response() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    start = h.now
    h.core.cancel(call_id, h.now)
    h.flush()
    h.advance(12)
    assert _cancel_times(h, start) == [0, 0.5, 1.5, 3.5, 7.5, 11.5]
    h.deliver(far.respond(h.last("CANCEL"), 200))
    h.advance(10)
    assert len(h.sent_requests("CANCEL")) == 6
    h.deliver(far.respond(invite, 487))
    ack = h.last("ACK")
    assert ack.via_branch == invite.via_branch and ack.cseq == (1, "ACK")
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.status_code == 487
    assert cancelled.cdr.disposition is Disposition.CANCELLED
    assert cancelled.cdr.hangup_by is HangupBy.LOCAL
    assert cancelled.cdr.hangup_reason is HangupReason.NORMAL  # the scheduler's cancel
    assert h.core.leg_count == 0


def test_cancel_over_tcp_is_not_retransmitted() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = _ringing(h, far, transport=Transport.TCP)
    h.core.cancel(call_id, h.now)
    h.advance(20)
    assert len(h.sent_requests("CANCEL")) == 1


def test_ring_timeout_cancels_and_counts_as_no_answer() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far, ring_timeout=25.0)
    h.advance(24.9)
    assert h.sent_requests("CANCEL") == []
    h.advance(0.1)
    cancel = h.last("CANCEL")
    assert (cancel.header("reason") or "").startswith("Q.850;cause=19")
    h.deliver(far.respond(cancel, 200))
    h.deliver(far.respond(invite, 487))
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.cdr.disposition is Disposition.NO_ANSWER
    assert cancelled.cdr.hangup_reason is HangupReason.TIMER_EXPIRED  # our ring timer expired
    assert cancelled.cdr.hangup_by is HangupBy.LOCAL


def test_max_ring_time_applies_when_the_request_has_no_ring_timeout() -> None:
    h = Harness(config=core_config(max_ring_time=60.0))
    far = FarEnd()
    _ringing(h, far)
    h.advance(59.9)
    assert h.sent_requests("CANCEL") == []
    h.advance(0.1)
    assert len(h.sent_requests("CANCEL")) == 1


def test_200_crossing_the_cancel_is_acked_and_byed_and_cancel_stops() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    h.core.cancel(call_id, h.now)
    h.flush()
    h.advance(0.2)
    h.deliver(far.answer(invite))
    methods = [s.request.method for s in h.wire[-2:]]
    assert methods == ["ACK", "BYE"]
    assert h.events_of(AnswerReceived) == []
    h.advance(10)
    assert len(h.sent_requests("CANCEL")) == 1  # never retransmitted after the answer
    h.deliver(far.respond(h.last("BYE"), 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.hangup_by is HangupBy.LOCAL


def test_200_crossing_a_ring_timeout_cancel_is_byed_as_the_ring_timeout() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far, ring_timeout=20.0)
    h.advance(20)
    h.deliver(far.answer(invite))
    bye = h.last("BYE")
    assert (bye.header("reason") or "").startswith("Q.850;cause=19")
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.hangup_reason is HangupReason.TIMER_EXPIRED


def test_answer_before_a_queued_cancel_means_no_cancel_at_all() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.core.cancel(call_id, h.now)
    h.advance(3.0)  # however long the CANCEL waits for a 1xx (RFC 3261 §9.1)
    h.deliver(far.answer(h.last("INVITE")))
    h.advance(5)
    assert h.sent_requests("CANCEL") == []
    assert len(h.sent_requests("ACK")) == 1
    assert {s.request.cseq for s in h.sent_requests("BYE")} == {(2, "BYE")}


def test_481_to_cancel_does_not_kill_the_leg() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    h.core.cancel(call_id, h.now)
    h.flush()
    h.deliver(far.respond(h.last("CANCEL"), 481))
    assert h.core.leg_count == 1
    assert [e for e in h.all_events if e.__class__.__name__.startswith("Leg")] == []
    h.deliver(far.respond(invite, 487))
    assert isinstance(h.terminal(call_id), LegCancelled)


def test_cancelled_invite_without_final_response_ends_64_t1_after_the_cancel() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = _ringing(h, far)
    h.advance(5)
    h.core.cancel(call_id, h.now)
    cancel_at = h.now
    h.flush()
    h.deliver(far.respond(h.last("CANCEL"), 200))
    h.advance(31.9)
    assert h.core.leg_count == 1
    h.advance(0.1)
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.at == cancel_at + 32
    assert cancelled.cdr.final_status_code is None
    assert cancelled.cdr.disposition is Disposition.CANCELLED
    h.run_out()
    assert h.core.next_deadline() is None


def test_cancel_of_a_silent_invite_ends_as_cancelled_at_timer_b() -> None:
    h = Harness()
    call_id = h.dial()
    h.core.cancel(call_id, h.now)
    h.advance(40)
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.cdr.final_status_code is None
    assert cancelled.cdr.disposition is Disposition.CANCELLED


def test_terminal_events_say_how_the_call_ended_ring_timeout_vs_cancel() -> None:
    """Both end LegCancelled with a 487: disposition, hangup fields and Reason tell them apart."""
    outcomes = {}
    for how in ("ring_timeout", "cancel"):
        h = Harness()
        far = FarEnd()
        call_id, invite = _ringing(h, far, ring_timeout=5.0)
        if how == "cancel":
            h.core.cancel(call_id, h.now)
            h.flush()
        else:
            h.advance(5.0)
        cancel_request = h.last("CANCEL")
        h.deliver(far.respond(cancel_request, 200))
        h.deliver(far.respond(invite, 487))
        event = h.terminal(call_id)
        assert isinstance(event, LegCancelled)
        outcomes[how] = event.outcome
        assert event.final_status_code == 487 and event.hangup_by is HangupBy.LOCAL
    ring, cancel = outcomes["ring_timeout"], outcomes["cancel"]
    assert ring.disposition is Disposition.NO_ANSWER
    assert ring.hangup_reason is HangupReason.TIMER_EXPIRED
    assert (ring.reason_protocol, ring.reason_cause) == ("Q.850", 19)
    assert cancel.disposition is Disposition.CANCELLED
    assert cancel.hangup_reason is HangupReason.NORMAL
    assert (cancel.reason_protocol, cancel.reason_cause) == ("Q.850", 16)
    assert cancel.final_status_code == 487
