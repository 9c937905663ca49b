"""Crash recovery from a DialogSnapshot, lost connections, drop() and cleanup_if_present()."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sipstack.cdr import Disposition, HangupBy, HangupReason
from sipstack.errors import LocalProtocolError
from sipstack.events import AnswerReceived, LegCancelled, LegEnded, LegFailed
from sipstack.reason import LocalHangup
from sipstack.transport import Transport
from tests.fakes import TRUNK, FarEnd, Harness, Sent, describe, establish


def test_snapshot_of_an_established_leg_lets_another_core_bye_it() -> None:
    owner = Harness(seed=1)
    far = FarEnd(record_route=("<sip:edge.example.com;lr>",))
    call_id, invite = establish(owner, far)
    snapshot = owner.core.dialog_snapshot(call_id)
    assert snapshot.state == "established"
    assert snapshot.local_tag == invite.from_tag and snapshot.remote_tag == far.tag
    assert snapshot.remote_target == "sip:callee@192.0.2.10:5060"
    assert snapshot.route_set == ("<sip:edge.example.com;lr>",)
    assert snapshot.invite_branch == invite.via_branch
    assert snapshot.invite_via == invite.header("via")
    assert snapshot.local_cseq == 1 and snapshot.transport is Transport.UDP

    heir = Harness(seed=2)
    heir.clock.now = owner.now + 100
    assert heir.core.end_recovered(snapshot, heir.now) == call_id
    heir.flush()
    bye = heir.last("BYE")
    assert bye.call_id == call_id
    assert bye.cseq == (2, "BYE")
    assert bye.header("from") == invite.header("from")
    assert bye.to_tag == far.tag
    assert bye.uri == "sip:callee@192.0.2.10:5060"
    assert bye.headers_all("route") == ["<sip:edge.example.com;lr>"]
    assert "recovery" in (bye.header("reason") or "")
    assert heir.sent_requests("BYE")[0].out.address == ("edge.example.com", 5060)
    heir.deliver(far.respond(bye, 200))
    ended = heir.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.reason.startswith("recovered leg")
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.started_at == owner.all_events[0].at
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.correlation_id == "corr-1"


def test_snapshot_of_a_ringing_leg_lets_another_core_cancel_it() -> None:
    owner = Harness(seed=1)
    far = FarEnd()
    call_id = owner.dial()
    invite = owner.last("INVITE")
    owner.deliver(far.respond(invite, 180))
    snapshot = owner.core.dialog_snapshot(call_id)
    assert snapshot.state == "ringing"

    heir = Harness(seed=2)
    heir.core.end_recovered(snapshot, heir.now)
    heir.flush()
    cancel = heir.last("CANCEL")
    assert cancel.header("via") == invite.header("via")
    assert cancel.cseq == (1, "CANCEL") and cancel.uri == invite.uri
    assert cancel.header("to") == invite.header("to")
    heir.deliver(far.respond(cancel, 200))
    heir.deliver(far.respond(invite, 487))
    ack = heir.last("ACK")
    assert ack.via_branch == invite.via_branch
    cancelled = heir.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.reason.startswith("recovered leg")
    assert cancelled.cdr.disposition is Disposition.CANCELLED


def test_end_recovered_rejects_bad_snapshots() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    snapshot = h.core.dialog_snapshot(call_id)
    with pytest.raises(LocalProtocolError, match="live here"):
        h.core.end_recovered(snapshot, h.now)
    other = Harness()
    bad = replace(snapshot, state="weird")
    with pytest.raises(LocalProtocolError, match="state"):
        other.core.end_recovered(bad, other.now)
    assert other.core.leg_count == 0


TCP_CONTACT = "<sip:callee@192.0.2.10:5060;transport=tcp>"


def tcp_out(h: Harness, method: str) -> list[Sent]:
    """The requests of `method` the core sent over TCP to the trunk."""
    return [s for s in h.sent_requests(method) if s.out.transport is Transport.TCP]


def test_lost_connection_fails_an_invite_that_has_no_response_yet() -> None:
    h = Harness()
    calling = h.dial(transport=Transport.TCP)
    elsewhere = h.dial(signaling_addr="192.0.2.99:5060", transport=Transport.TCP)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    assert h.flush() == []  # §9.1: no CANCEL before a provisional response
    failed = h.terminal(calling)
    assert isinstance(failed, LegFailed)
    assert failed.cdr.error == "connection lost"
    assert failed.cdr.disposition is Disposition.CONGESTION
    assert (failed.cdr.hangup_reason, failed.cdr.hangup_by) == (
        HangupReason.ERROR,
        HangupBy.LOCAL,
    )
    assert h.core.leg_count == 1 and h.core.dialog_snapshot(elsewhere).state == "calling"
    h.advance(40)
    assert len(h.sent_requests("INVITE")) == 2  # one each, nothing retransmitted over TCP
    assert h.terminal(calling) is failed


def test_lost_connection_cancels_a_ringing_leg_again_and_it_ends_on_that_cancels_answer() -> None:
    h = Harness()
    far = FarEnd()
    ringing = h.dial(transport=Transport.TCP)
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180), transport=Transport.TCP)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.flush()
    [sent] = tcp_out(h, "CANCEL")
    assert sent.out.address == TRUNK  # the shell opens a new connection for it
    cancel = sent.request
    assert cancel.header("via") == invite.header("via") and cancel.cseq == (1, "CANCEL")
    assert cancel.header("reason") == 'Q.850;cause=31;text="connection lost"'
    assert h.events_of(LegFailed) == []  # not over until the CANCEL is
    h.advance(1)
    h.deliver(far.respond(cancel, 200), transport=Transport.TCP)
    failed = h.terminal(ringing)
    assert isinstance(failed, LegFailed)
    assert failed.reason == "connection lost"
    assert failed.cdr.error == "connection lost while ringing; CANCEL sent again, answered 200"
    assert failed.cdr.disposition is Disposition.CONGESTION
    assert failed.cdr.final_status_code is None
    assert (failed.cdr.reason_protocol, failed.cdr.reason_cause) == ("Q.850", 31)
    assert (failed.cdr.hangup_reason, failed.cdr.hangup_by) == (
        HangupReason.ERROR,
        HangupBy.LOCAL,
    )
    assert failed.at == h.now
    h.deliver(far.respond(invite, 487), transport=Transport.TCP)
    ack = h.last("ACK")  # the late 487 still gets the ACK of its transaction
    assert ack.via_branch == invite.via_branch and ack.cseq == (1, "ACK")
    assert h.terminal(ringing) is failed and h.core.leg_count == 0


def test_a_scheduler_cancel_cut_by_a_lost_connection_is_sent_again_and_reported_cancelled() -> (
    None
):
    h = Harness()
    far = FarEnd()
    call_id = h.dial(transport=Transport.TCP)
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 183), transport=Transport.TCP)
    h.core.cancel(call_id, h.now)
    h.flush()
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.flush()
    first, again = tcp_out(h, "CANCEL")
    assert again.request.header("reason") == first.request.header("reason")
    assert again.request.via_branch == invite.via_branch
    h.advance(32)  # Timer F of the CANCEL sent again: nothing answered it
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.cdr.disposition is Disposition.CANCELLED
    assert cancelled.cdr.error == "connection lost while ringing; CANCEL sent again, no response"


def test_a_lost_connection_leaves_an_idle_established_call_up_and_our_bye_goes_later() -> None:
    # RFC 3261 §18: a proxy closing an idle connection (Kamailio after 120 s) is no hang-up.
    h = Harness()
    far = FarEnd(contact=TCP_CONTACT)
    up, _ = establish(h, far, transport=Transport.TCP)
    answered_at = h.now
    h.advance(10)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    assert h.flush() == []
    assert h.core.is_established(up) and h.events_of(LegEnded) == []
    h.advance(100)
    assert h.events_of(LegEnded) == []
    h.core.bye(up, h.now)
    h.flush()
    [sent] = tcp_out(h, "BYE")
    assert sent.out.address == TRUNK  # no pooled connection there: the shell opens a new one
    assert sent.request.cseq == (2, "BYE") and sent.request.to_tag == far.tag
    h.deliver(far.respond(sent.request, 200), transport=Transport.TCP)
    ended = h.terminal(up)
    assert isinstance(ended, LegEnded)
    assert (ended.cdr.hangup_by, ended.cdr.hangup_reason) == (HangupBy.LOCAL, HangupReason.NORMAL)
    assert ended.cdr.error is None and ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.answered_at == answered_at and ended.cdr.billsec == 110


def test_a_far_end_bye_after_a_lost_connection_ends_the_call_as_a_remote_hangup() -> None:
    h = Harness()
    far = FarEnd(contact=TCP_CONTACT)
    up, invite = establish(h, far, transport=Transport.TCP)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.advance(30)
    h.deliver(far.request("BYE", invite), transport=Transport.TCP)
    assert h.sent_responses()[-1].status_code == 200
    ended = h.terminal(up)
    assert isinstance(ended, LegEnded)
    assert (ended.cdr.hangup_by, ended.cdr.hangup_reason) == (HangupBy.REMOTE, HangupReason.NORMAL)
    assert ended.cdr.billsec == 30 and ended.cdr.error is None


def test_an_unanswered_bye_sent_again_after_a_lost_connection_ends_the_leg_at_timer_f() -> None:
    h = Harness()
    far = FarEnd(contact=TCP_CONTACT)
    up, _ = establish(h, far, transport=Transport.TCP)
    h.core.bye(up, h.now)
    h.flush()
    lost_at = h.now
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.flush()
    h.advance(31.9)
    assert h.events_of(LegEnded) == []
    h.advance(0.2)
    ended = h.terminal(up)
    assert ended.at == lost_at + 32.0
    assert len(tcp_out(h, "BYE")) == 2  # ours, and once again: no retransmission over TCP


def test_a_bye_in_flight_when_the_connection_breaks_goes_again_with_its_own_reason() -> None:
    h = Harness()
    far = FarEnd(contact=TCP_CONTACT)
    up, _ = establish(h, far, transport=Transport.TCP)
    h.core.bye(up, h.now)
    h.flush()
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.flush()
    first, again = tcp_out(h, "BYE")
    assert again.request.cseq == (3, "BYE") and again.request.via_branch != first.request.via_branch
    assert again.request.header("reason") == first.request.header("reason")
    h.deliver(far.respond(again.request, 200), transport=Transport.TCP)
    ended = h.terminal(up)
    assert ended.cdr.hangup_reason is HangupReason.NORMAL and ended.cdr.error is None


def test_a_2xx_crossing_the_cancel_sent_again_is_acked_and_byed() -> None:
    h = Harness()
    far = FarEnd(contact=TCP_CONTACT)
    call_id = h.dial(transport=Transport.TCP)
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180), transport=Transport.TCP)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.flush()
    h.deliver(far.answer(invite), transport=Transport.TCP)
    assert [describe(s) for s in h.wire[-2:]] == ["ACK 1", "BYE 2"]
    bye = h.last("BYE")
    assert bye.header("reason") == 'Q.850;cause=31;text="connection lost"'
    assert h.events_of(AnswerReceived) == []  # nobody is asked to confirm a call we end
    h.deliver(far.respond(bye, 200), transport=Transport.TCP)
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.hangup_reason is HangupReason.ERROR and ended.cdr.error == "connection lost"


def test_when_the_new_connection_breaks_too_every_rescued_leg_ends_once() -> None:
    h = Harness()
    far = FarEnd(contact=TCP_CONTACT)
    up, _ = establish(h, far, transport=Transport.TCP)
    ringing = h.dial(transport=Transport.TCP)
    h.deliver(far.respond(h.last("INVITE"), 180), transport=Transport.TCP)
    h.core.bye(up, h.now, reason=LocalHangup.ERROR)
    h.flush()
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    sent = len(h.flush())
    assert sent == 2  # the BYE again, one CANCEL
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)  # the new connection failed as well
    assert h.flush() == []
    ended = h.terminal(up)
    assert isinstance(ended, LegEnded) and ended.cdr.hangup_reason is HangupReason.ERROR
    failed = h.terminal(ringing)
    assert isinstance(failed, LegFailed)
    assert failed.cdr.error == (
        "connection lost while ringing; CANCEL sent again, its new connection failed too"
    )
    assert h.core.leg_count == 0
    h.run_out()
    assert len(h.events_of(LegEnded)) == 1 and len(h.events_of(LegFailed)) == 1


def test_a_leg_whose_dialog_moved_to_another_hop_keeps_its_call() -> None:
    h = Harness()
    far = FarEnd(contact="<sip:callee@192.0.2.20:5060;transport=tcp>")
    up, _ = establish(h, far, transport=Transport.TCP)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    assert h.flush() == []
    assert h.core.is_established(up) and h.events_of(LegEnded) == []


def test_drop_forgets_a_leg_silently_but_still_reports_it() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.core.cancel(call_id, h.now)
    assert h.core.drop(call_id)
    assert not h.core.drop(call_id)
    assert h.flush() == []
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    h.advance(40)
    assert len(h.sent_requests("INVITE")) == 1  # no retransmission for a dropped leg
    assert h.sent_requests("CANCEL") == []
    h.deliver(far.answer(invite))  # a late answer is never left half-open
    assert [s.request.method for s in h.wire[-2:]] == ["ACK", "BYE"]
    assert h.core.stats.orphan_answers == 1


def test_cleanup_if_present_ends_with_the_given_reason_class() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.core.cleanup_if_present("absent", "normal", h.now)
    with pytest.raises(LocalProtocolError, match="reason_class"):
        h.core.cleanup_if_present(call_id, "bogus", h.now)
    h.core.cleanup_if_present(call_id, "user_hangup", h.now)
    h.core.cleanup_if_present(call_id, "user_hangup", h.now)
    assert h.flush() == []
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_reason is HangupReason.USER_HANGUP
    assert ended.cdr.hangup_by is HangupBy.REMOTE
    assert h.core.leg_count == 0
