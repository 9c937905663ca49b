"""BYE both ways and the far end's other requests: OPTIONS, INFO, UPDATE, re-INVITE, unknowns."""

from __future__ import annotations

import pytest

from sipstack.cdr import Disposition, HangupBy, HangupReason
from sipstack.errors import LocalProtocolError, UnknownLegError
from sipstack.events import LegEnded
from sipstack.message import Request, Response
from sipstack.reason import LocalHangup
from sipstack.sdp import parse_answer
from sipstack.transport import Transport
from tests.fakes import ANSWER_SDP, CREDENTIALS, TRUNK, FarEnd, Harness, establish


def _responses(h: Harness, method: str) -> list[Response]:
    return [r for r in h.sent_responses() if r.cseq[1] == method]


# -- our BYE ----------------------------------------------------------------------------------


def test_our_bye_has_a_new_branch_next_cseq_and_reason_and_ends_on_its_200() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.advance(30)
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    ack = h.last("ACK")
    assert bye.cseq == (2, "BYE")
    assert bye.via_branch not in (invite.via_branch, ack.via_branch)
    assert bye.uri == "sip:callee@192.0.2.10:5060"
    assert bye.header("reason") == 'Q.850;cause=16;text="Normal call clearing"'
    assert h.core.is_established(call_id)  # until the BYE completes
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.hangup_reason is HangupReason.NORMAL
    assert (ended.cdr.reason_protocol, ended.cdr.reason_cause) == ("Q.850", 16)
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.billsec == 30
    assert ended.cdr.error is None
    assert h.core.leg_count == 0
    assert not h.core.drop(call_id)


def test_bye_misuse() -> None:
    h = Harness()
    far = FarEnd()
    with pytest.raises(UnknownLegError):
        h.core.bye("nope", h.now)
    ringing = h.dial()
    h.deliver(far.respond(h.last("INVITE"), 180))
    with pytest.raises(LocalProtocolError, match="not ready for BYE"):
        h.core.bye(ringing, h.now)


def test_second_bye_is_a_no_op() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.core.bye(call_id, h.now)
    h.core.bye(call_id, h.now, reason=LocalHangup.ERROR)
    h.flush()
    assert len(h.sent_requests("BYE")) == 1


def test_unanswered_bye_is_retransmitted_and_timer_f_ends_the_leg() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.core.bye(call_id, h.now, reason=LocalHangup.MAX_DURATION)
    start = h.now
    h.flush()
    h.advance(40)
    times = [s.at - start for s in h.sent_requests("BYE")]
    assert times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.at == start + 32
    assert ended.cdr.error == "no response to BYE (Timer F)"
    assert ended.cdr.reason_text == "Maximum call duration reached"


def test_challenged_bye_is_answered_once() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far, credentials=CREDENTIALS)
    h.core.bye(call_id, h.now)
    h.flush()
    first = h.last("BYE")
    challenge = 'Digest realm="carrier", nonce="b1", qop="auth"'
    h.deliver(far.respond(first, 407, headers=[("Proxy-Authenticate", challenge)]))
    second = h.last("BYE")
    assert second.cseq == (3, "BYE")
    assert 'nonce="b1"' in (second.header("proxy-authorization") or "")
    h.deliver(far.respond(second, 200))
    assert isinstance(h.terminal(call_id), LegEnded)


# -- the peer's BYE ---------------------------------------------------------------------------


def test_remote_bye_gets_200_and_its_reason_goes_to_the_cdr() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.advance(12.5)
    bye = far.request(
        "BYE",
        invite,
        headers=[("Reason", 'Q.850;cause=21;text="Call rejected; by user", SIP;cause=200')],
    )
    sent = h.deliver(bye)
    assert len(sent) == 1 and sent[0].out.address == TRUNK
    ok = sent[0].message
    assert isinstance(ok, Response) and ok.status_code == 200
    assert ok.cseq == bye.cseq and ok.header("to") == bye.header("to")
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.hangup_by is HangupBy.REMOTE
    assert ended.cdr.hangup_reason is HangupReason.USER_HANGUP
    assert ended.cdr.reason_protocol == "Q.850"
    assert ended.cdr.reason_cause == 21
    assert ended.cdr.reason_text == "Call rejected; by user"
    assert ended.cdr.billsec == 13
    assert h.core.leg_count == 0
    assert h.core.next_deadline() is not None  # only the response cache entry (Timer J)
    again = h.deliver(bye)  # retransmitted: the same 200 bytes once more
    assert len(again) == 1 and again[0].out.data == sent[0].out.data
    assert len(h.events_of(LegEnded)) == 1


def test_remote_bye_without_reason_is_normal() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.deliver(far.request("BYE", invite))
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_reason is HangupReason.NORMAL
    assert ended.cdr.reason_protocol is None


def test_remote_bye_crossing_ours_ends_the_leg_as_ours() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.core.bye(call_id, h.now)
    h.flush()
    h.deliver(far.request("BYE", invite))
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    h.deliver(far.respond(h.last("BYE"), 481))
    assert len(h.events_of(LegEnded)) == 1


# -- other requests ---------------------------------------------------------------------------


def test_in_dialog_options_and_info_get_200() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    h.deliver(far.request("OPTIONS", invite))
    h.deliver(far.request("INFO", invite, body=b"Signal=5\r\n"))
    options_ok = _responses(h, "OPTIONS")[-1]
    assert options_ok.status_code == 200
    assert options_ok.header("allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
    assert _responses(h, "INFO")[-1].status_code == 200
    assert h.core.leg_count == 1


def test_requests_for_unknown_dialogs_get_481() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    h.deliver(far.request("BYE", invite, call_id="unknown@elsewhere"))
    assert _responses(h, "BYE")[-1].status_code == 481
    wrong_tag = far.request("BYE", invite)
    wrong_tag.set_header("To", (invite.header("from") or "").split(";tag=")[0] + ";tag=bogus")
    h.deliver(wrong_tag)
    assert _responses(h, "BYE")[-1].status_code == 481
    assert h.core.stats.unknown_dialog_requests == 2
    assert h.core.leg_count == 1


def test_unsupported_methods_get_501_with_allow_and_options_outside_a_dialog_200() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    h.deliver(far.request("REFER", invite, headers=[("Refer-To", "<sip:x@example.com>")]))
    refused = _responses(h, "REFER")[-1]
    assert refused.status_code == 501
    assert refused.header("allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
    ping = Request(
        "OPTIONS",
        "sip:outbound@192.0.2.1",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKping;rport"),
            ("From", "<sip:sbc@192.0.2.10>;tag=p1"),
            ("To", "<sip:outbound@192.0.2.1>"),
            ("Call-ID", "ping-1"),
            ("CSeq", "1 OPTIONS"),
        ],
    )
    h.deliver(ping)
    pong = _responses(h, "OPTIONS")[-1]
    assert pong.status_code == 200 and pong.to_tag


def test_reinvite_is_answered_with_our_session_and_its_ack_absorbed() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    reinvite = far.request(
        "INVITE",
        invite,
        headers=[("Contact", "<sip:callee@192.0.2.10:5062>"), ("Content-Type", "application/sdp")],
        body=ANSWER_SDP,
    )
    h.deliver(reinvite)
    ok = _responses(h, "INVITE")[-1]
    assert ok.status_code == 200
    answer = parse_answer(ok.body)  # the codec in use, as offered, not our whole first offer
    assert (answer.codec_name, answer.payload_types) == ("PCMA", (8, 101))
    assert ok.header("contact") == invite.header("contact")
    ack = far.request("ACK", invite, cseq=reinvite.cseq[0], branch="z9hG4bKack")
    assert h.deliver(ack) == []
    h.advance(10)
    assert len(_responses(h, "INVITE")) == 1
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    assert bye.uri == "sip:callee@192.0.2.10:5062"  # the re-INVITE refreshed the target
    assert h.sent_requests("BYE")[-1].out.address == ("192.0.2.10", 5062)


def test_reinvite_2xx_is_retransmitted_until_ack_then_the_call_is_ended() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    start = h.now
    h.deliver(far.request("INVITE", invite, body=ANSWER_SDP))
    h.advance(12)
    oks = [s for s in h.wire if isinstance(s.message, Response) and s.message.cseq[1] == "INVITE"]
    assert [s.at - start for s in oks] == [0, 0.5, 1.5, 3.5, 7.5, 11.5]
    h.advance(21)
    bye = h.last("BYE")
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert ended.cdr.error == "no ACK for our 2xx to the re-INVITE"


def test_cseq_going_backwards_gets_500() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    h.deliver(far.request("INFO", invite, cseq=10))
    h.deliver(far.request("INFO", invite, cseq=5))
    assert [r.status_code for r in _responses(h, "INFO")] == [200, 500]


def test_responses_go_to_the_via_port_without_rport() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    info = far.request("INFO", invite)
    info.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKnorport")
    sent = h.deliver(info, source=("192.0.2.10", 40000))
    assert sent[0].out.address == ("192.0.2.10", 5070)
    info = far.request("INFO", invite)
    info.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKrport;rport")
    sent = h.deliver(info, source=("192.0.2.10", 40000))
    assert sent[0].out.address == ("192.0.2.10", 40000)
    sent = h.deliver(
        far.request("INFO", invite), source=("192.0.2.10", 40001), transport=Transport.TCP
    )
    assert sent[0].out.address == ("192.0.2.10", 40001)
    assert sent[0].out.transport is Transport.TCP


def test_garbage_and_stray_responses_are_counted_not_raised() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.deliver(b"\x00\xffnot sip at all")
    h.deliver(b"")
    h.deliver(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKzz\r\n\r\n")
    stray = far.respond(invite, 486)
    stray.set_header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnobody")
    stray.set_header("Call-ID", "nobody@nowhere")
    h.deliver(stray)
    assert h.core.stats.parse_errors == 3
    assert h.core.stats.stray_responses == 1
    assert h.core.is_established(call_id)


def test_an_unanswered_bye_bills_until_the_bye_was_sent_not_until_timer_f() -> None:
    """A max_duration 60 call bills 60 s even when its BYE goes unanswered for 32 s."""
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far, max_duration=60.0)
    answered_at = h.now
    h.advance(60)
    assert len(h.sent_requests("BYE")) == 1
    bye_sent_at = h.now
    h.advance(40)
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.ended_at == bye_sent_at
    assert ended.cdr.billsec == 60
    assert ended.cdr.answered_at == answered_at


def test_a_bye_answered_late_still_ends_the_call_when_we_sent_it() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.advance(10)
    h.core.bye(call_id, h.now)
    bye_sent_at = h.now
    h.flush()
    h.advance(3)
    h.deliver(far.respond(h.last("BYE"), 200))
    ended = h.terminal(call_id)
    assert ended.cdr.ended_at == bye_sent_at and ended.cdr.billsec == 10
