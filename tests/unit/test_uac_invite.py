"""The INVITE of a leg: its wire format, dial errors, Timers A/B, ACKs, answers and failures."""

from __future__ import annotations

import re

import pytest

from sipstack.cdr import Disposition, HangupBy, HangupReason
from sipstack.dial import DialTarget
from sipstack.errors import LocalProtocolError
from sipstack.events import (
    AnswerReceived,
    CallIdAdopted,
    DialogEstablished,
    InviteSent,
    LegEnded,
    LegFailed,
    ProvisionalReceived,
)
from sipstack.headers.history import Diversion, HistoryInfoEntry
from sipstack.message import Request, Response, parse_message
from sipstack.sdp import parse_answer
from sipstack.transactions import TxState
from sipstack.transport import Transport
from tests.fakes import (
    ANSWER_SDP,
    TRUNK,
    FarEnd,
    Harness,
    core_config,
    dial_request,
    establish,
)

VIA_RE = re.compile(r"SIP/2\.0/UDP 192\.0\.2\.1:5060;branch=z9hG4bK[0-9a-f]+;rport")


# -- the INVITE on the wire -----------------------------------------------------------------


def test_invite_carries_every_header_the_reference_sends() -> None:
    h = Harness()
    call_id = h.dial()
    invite = h.last("INVITE")
    sent = h.sent_requests("INVITE")[0]
    assert sent.out.address == TRUNK and sent.out.transport is Transport.UDP
    assert invite.uri == "sip:+15551234567@carrier.example"
    assert VIA_RE.fullmatch(invite.header("via") or "")
    assert invite.header("max-forwards") == "70"
    assert re.fullmatch(
        r"<sip:outbound@192\.0\.2\.1>;tag=[0-9a-f]{8,}", invite.header("from") or ""
    )
    assert invite.header("to") == "<sip:+15551234567@carrier.example>"
    assert invite.call_id == call_id and call_id.endswith("@192.0.2.1")
    assert invite.cseq == (1, "INVITE")
    assert invite.header("contact") == "<sip:outbound@192.0.2.1:5060>"
    assert invite.header("allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
    assert invite.header("supported") == "timer"  # no 100rel, no replaces
    assert invite.header("user-agent") == "outbound/0.1"
    assert invite.header("content-type") == "application/sdp"
    assert invite.header("content-length") == str(len(invite.body))
    assert not invite.has_header("session-expires")
    offer = invite.body.decode()
    assert "m=audio 10000 RTP/AVP 8 0 9 111 101" in offer
    assert "a=rtpmap:111 opus/48000/2" in offer
    assert isinstance(h.all_events[0], InviteSent) and h.all_events[0].call_id == call_id


def test_caller_identity_headers_and_quoted_display_name() -> None:
    h = Harness()
    h.dial(
        caller_user="+4930123456",
        caller_display_name='Ann "Q" Smith\\',
        asserted_identity_uri="tel:+4930123456",
        asserted_identity_display_name="Ann",
        privacy_tokens=("id", "header"),
        history_info=(HistoryInfoEntry(uri="sip:+4930999@example.com", index="1"),),
        diversion=(Diversion(uri="sip:+4930999@example.com", reason="user-busy", counter=1),),
        identity_header="eyJhbGciOiJFUzI1NiJ9.e30.c2ln;info=<https://cert.example/x.pem>",
    )
    invite = h.last("INVITE")
    assert (invite.header("from") or "").startswith(
        '"Ann \\"Q\\" Smith\\\\" <sip:+4930123456@192.0.2.1>;tag='
    )
    assert invite.header("contact") == "<sip:+4930123456@192.0.2.1:5060>"
    assert invite.header("p-asserted-identity") == '"Ann" <tel:+4930123456>'
    assert invite.header("privacy") == "id;header"
    assert invite.header("history-info") == "<sip:+4930999@example.com>;index=1"
    assert invite.header("diversion") == ("<sip:+4930999@example.com>;reason=user-busy;counter=1")
    assert invite.header("identity") == (
        "eyJhbGciOiJFUzI1NiJ9.e30.c2ln;info=<https://cert.example/x.pem>"
    )


def test_sips_target_goes_over_tls_with_sips_contact() -> None:
    h = Harness(config=core_config(local_addresses={
        Transport.UDP: ("192.0.2.1", 5060), Transport.TLS: ("192.0.2.1", 5061),
    }))  # fmt: skip
    h.dial(request_uri="sips:+15550001@carrier.example", signaling_addr="192.0.2.10")
    sent = h.sent_requests("INVITE")[0]
    invite = sent.request
    assert sent.out.transport is Transport.TLS
    assert sent.out.address == ("192.0.2.10", 5061)
    assert invite.uri == "sips:+15550001@carrier.example"
    assert (invite.header("via") or "").startswith("SIP/2.0/TLS 192.0.2.1:5061;branch=")
    assert invite.header("contact") == "<sips:outbound@192.0.2.1:5061>"
    assert (invite.header("from") or "").startswith("<sips:outbound@192.0.2.1>")


def test_transport_parameter_selects_tcp_and_tel_targets_stay_tel() -> None:
    h = Harness()
    h.dial(request_uri="sip:bob@carrier.example;transport=tcp")
    tcp = h.sent_requests("INVITE")[0]
    assert tcp.out.transport is Transport.TCP
    assert tcp.request.header("contact") == "<sip:outbound@192.0.2.1:5060;transport=tcp>"
    h.dial(request_uri="tel:+15550002")
    tel = h.last("INVITE")
    assert tel.uri == "tel:+15550002" and tel.header("to") == "<tel:+15550002>"


def test_preallocated_call_id_and_verbatim_sdp() -> None:
    h = Harness()
    body = "v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    call_id = h.dial(call_id="fixed-call-id@example", sdp_body=body)
    invite = h.last("INVITE")
    assert call_id == "fixed-call-id@example" == invite.call_id
    assert invite.body == body.encode()
    with pytest.raises(LocalProtocolError, match="call_id"):
        h.dial(call_id="fixed-call-id@example")


def test_session_expires_offered_when_configured() -> None:
    h = Harness(config=core_config(session_expires=1800, min_se=120))
    h.dial()
    invite = h.last("INVITE")
    assert invite.header("session-expires") == "1800"
    assert invite.header("min-se") == "120"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"request_uri": ""}, "request_uri"),
        ({"request_uri": "http://example.com"}, "request_uri"),
        ({"signaling_addr": " "}, "signaling_addr"),
        ({"signaling_addr": "192.0.2.10:99999"}, "signaling_addr"),
        ({"ring_timeout": 0}, "ring_timeout"),
        ({"max_duration": -1.0}, "max_duration"),
        ({"session_expires": 30}, "session_expires"),
        ({"rtp_port": 70000}, "rtp_port"),
        ({"asserted_identity_uri": "not a uri"}, "asserted_identity_uri"),
        ({"identity_header": "a\r\nInjected: yes"}, "Identity"),
    ],
)
def test_bad_dial_requests_name_the_field(overrides: dict[str, object], field: str) -> None:
    h = Harness()
    with pytest.raises(LocalProtocolError, match=field):
        h.dial(**overrides)
    assert h.core.leg_count == 0
    assert h.core.outgoing() == []


def test_max_legs_is_enforced() -> None:
    h = Harness(config=core_config(max_legs=1))
    h.dial()
    with pytest.raises(LocalProtocolError, match="max_legs"):
        h.dial()


# -- Timer A / Timer B ----------------------------------------------------------------------


def test_unanswered_invite_is_retransmitted_then_timer_b_fails_the_leg() -> None:
    h = Harness()
    call_id = h.dial()
    start = h.now
    h.advance(40)
    times = [s.at - start for s in h.sent_requests("INVITE")]
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    failed = h.terminal(call_id)
    assert isinstance(failed, LegFailed)
    assert failed.at == start + 32.0
    assert failed.cdr.final_status_code is None
    assert failed.cdr.disposition is Disposition.CONGESTION
    assert failed.cdr.hangup_reason is HangupReason.ERROR  # our error: nothing answered
    assert "Timer B" in (failed.cdr.error or "")
    assert h.core.leg_count == 0
    assert h.core.next_deadline() is None


# -- failures -------------------------------------------------------------------------------


def test_non_2xx_is_acked_with_the_invite_branch_and_uri() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180))
    busy = far.respond(invite, 486, headers=[("Reason", 'Q.850;cause=17;text="User busy"')])
    h.deliver(busy)
    ack = h.last("ACK")
    assert ack.uri == invite.uri
    assert ack.header("via") == invite.header("via")
    assert ack.header("to") == busy.header("to") and ack.to_tag == far.tag
    assert ack.header("from") == invite.header("from")
    assert ack.cseq == (1, "ACK")
    failed = h.terminal(call_id)
    assert isinstance(failed, LegFailed)
    assert failed.status_code == 486
    assert failed.cdr.disposition is Disposition.BUSY
    assert failed.cdr.hangup_by is HangupBy.REMOTE
    assert failed.cdr.hangup_reason is HangupReason.NORMAL  # Q.850 17
    assert (failed.cdr.reason_protocol, failed.cdr.reason_cause) == ("Q.850", 17)
    h.deliver(busy)  # retransmitted: the very same ACK goes out again
    acks = h.sent_requests("ACK")
    assert len(acks) == 2 and acks[0].out.data == acks[1].out.data
    assert len([e for e in h.all_events if isinstance(e, LegFailed)]) == 1


@pytest.mark.parametrize(
    ("status", "disposition"),
    [
        (486, Disposition.BUSY),
        (480, Disposition.NO_ANSWER),
        (408, Disposition.NO_ANSWER),
        (603, Disposition.REJECTED),
        (503, Disposition.CONGESTION),
        (404, Disposition.FAILED),
    ],
)
def test_a_failure_without_reason_header_is_normal_and_its_status_gives_the_disposition(
    status: int, disposition: Disposition
) -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), status))
    failed = h.terminal(call_id)
    assert failed.cdr.disposition is disposition
    assert failed.cdr.hangup_reason is HangupReason.NORMAL  # RFC 3326: no Reason, normal
    assert failed.cdr.hangup_by is HangupBy.REMOTE
    assert failed.cdr.reason_protocol is None and failed.cdr.error is None


@pytest.mark.parametrize(
    ("status", "reason", "hangup_reason"),
    [
        (486, "Q.850;cause=17", HangupReason.NORMAL),
        (480, "Q.850;cause=19", HangupReason.NORMAL),
        (603, 'Q.850;cause=21;text="Call rejected"', HangupReason.USER_HANGUP),
        (503, "Q.850;cause=34", HangupReason.ERROR),
        (480, "SIP;cause=408", HangupReason.TIMER_EXPIRED),
        (500, "SIP;cause=500, Q.850;cause=16", HangupReason.NORMAL),  # Q.850 wins
    ],
)
def test_a_failure_with_a_reason_header_is_classified_by_that_reason(
    status: int, reason: str, hangup_reason: HangupReason
) -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), status, headers=[("Reason", reason)]))
    failed = h.terminal(call_id)
    assert failed.cdr.hangup_reason is hangup_reason
    assert failed.cdr.final_status_code == status


def test_a_challenge_we_cannot_answer_is_our_error_whatever_its_reason_says() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()  # no credentials
    challenge = _challenge(far, h.last("INVITE"), 401, "n1")
    challenge.set_header("Reason", "Q.850;cause=16")
    h.deliver(challenge)
    failed = h.terminal(call_id)
    assert failed.cdr.error == "authentication failed: 401 challenge and no credentials"
    assert failed.cdr.hangup_reason is HangupReason.ERROR
    assert failed.cdr.disposition is Disposition.FAILED


# -- answers ----------------------------------------------------------------------------------


def test_answer_waits_for_confirm_then_acks_with_its_own_branch_through_the_route_set() -> None:
    h = Harness()
    far = FarEnd(record_route=("<sip:p2.example.com:5070;lr>", "<sip:p1.example.com;lr>"))
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180))
    h.deliver(far.answer(invite))
    answered = h.events_of(AnswerReceived)
    assert [(e.call_id, e.status_code, e.sdp, e.source) for e in answered] == [
        (call_id, 200, ANSWER_SDP, TRUNK)
    ]
    assert h.sent_requests("ACK") == []
    assert not h.core.is_established(call_id)
    assert h.core.confirm_answer(call_id, h.now)
    sent = h.flush()
    assert len(sent) == 1
    ack = sent[0].request
    assert ack.method == "ACK"
    assert ack.uri == "sip:callee@192.0.2.10:5060"  # the remote target from Contact
    assert ack.via_branch != invite.via_branch
    assert ack.cseq == (1, "ACK")
    assert ack.headers_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com:5070;lr>"]
    assert sent[0].out.address == ("p1.example.com", 5060)
    assert h.core.is_established(call_id)
    established = h.events_of(DialogEstablished)[0]
    assert established.codec == "PCMA"
    assert established.remote_rtp == ("192.0.2.10", 20000)
    assert established.srtp_key is None


def test_strict_route_puts_the_first_route_in_the_request_uri() -> None:
    h = Harness()
    far = FarEnd(record_route=("<sip:p2.example.com>", "<sip:p1.example.com:5080>"))
    establish(h, far)
    ack = h.last("ACK")
    assert ack.uri == "sip:p1.example.com:5080"
    assert ack.headers_all("route") == ["<sip:p2.example.com>", "<sip:callee@192.0.2.10:5060>"]
    assert h.sent_requests("ACK")[0].out.address == ("p1.example.com", 5080)


def test_retransmitted_200_gets_the_same_ack_again() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.deliver(far.answer(invite))
    acks = h.sent_requests("ACK")
    assert len(acks) == 2 and acks[0].out.data == acks[1].out.data
    h.advance(40)  # past Timer M: the Call-ID fallback still finds the leg, and the ACK
    h.deliver(far.answer(invite))  # bytes were let go, so a fresh ACK is built
    late = h.last("ACK")
    first = acks[0].request
    assert late.cseq == first.cseq and late.uri == first.uri and late.to_tag == first.to_tag
    assert len(h.events_of(DialogEstablished)) == 1
    assert h.core.is_established(call_id)


def test_a_2xx_from_another_fork_is_acked_and_byed() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    other = FarEnd(tag="fork-2", contact="<sip:other@192.0.2.20:5060>")
    h.deliver(other.answer(invite))
    fork_ack, fork_bye = h.last("ACK"), h.last("BYE")
    assert fork_ack.to_tag == fork_bye.to_tag == "fork-2"
    assert fork_bye.uri == "sip:other@192.0.2.20:5060"
    assert fork_bye.cseq == (2, "BYE")
    assert h.core.stats.orphan_answers == 1
    assert h.core.is_established(call_id)


def test_call_id_adoption_rekeys_the_leg() -> None:
    h = Harness()
    far = FarEnd()
    old = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.answer(invite, call_id="sbc-rewritten@carrier"))
    adopted = h.events_of(CallIdAdopted)
    assert [(e.old_call_id, e.new_call_id, e.correlation_id) for e in adopted] == [
        (old, "sbc-rewritten@carrier", "corr-1")
    ]
    assert h.events_of(AnswerReceived)[0].call_id == "sbc-rewritten@carrier"
    assert h.core.confirm_answer("sbc-rewritten@carrier", h.now)
    h.flush()
    assert h.last("ACK").call_id == "sbc-rewritten@carrier"
    assert not h.core.is_established(old)
    h.core.bye("sbc-rewritten@carrier", h.now)
    h.flush()
    assert h.last("BYE").call_id == "sbc-rewritten@carrier"


def test_call_id_adoption_is_skipped_when_it_collides() -> None:
    h = Harness()
    far = FarEnd()
    first = h.dial()
    second = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.answer(invite, call_id=first))
    assert h.events_of(CallIdAdopted) == []
    assert h.events_of(AnswerReceived)[0].call_id == second


def test_abort_answer_acks_then_byes_with_a_reason() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.answer(invite))
    assert h.core.abort_answer(call_id, "media bind failed", h.now)
    sent = h.flush()
    assert [s.request.method for s in sent] == ["ACK", "BYE"]
    bye = sent[1].request
    assert bye.cseq == (2, "BYE")
    assert (bye.header("reason") or "").startswith("Q.850;cause=31")
    assert h.events_of(DialogEstablished) == []
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.error == "media bind failed"
    assert ended.cdr.hangup_reason is HangupReason.ERROR
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert not h.core.abort_answer(call_id, "again", h.now)


def test_unconfirmed_answer_is_ended_after_64_t1() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.answer(h.last("INVITE")))
    h.advance(31.9)
    assert h.sent_requests("BYE") == []
    h.advance(0.1)
    assert [s.request.method for s in h.wire[-2:]] == ["ACK", "BYE"]
    h.deliver(far.respond(h.last("BYE"), 200))
    assert "not confirmed" in (h.terminal(call_id).cdr.error or "")


def test_unusable_sdp_answer_is_acked_byed_and_reported() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.answer(h.last("INVITE"), body=b"v=0\r\nthis is not sdp\r\n"))
    assert h.events_of(AnswerReceived) == []
    assert [s.request.method for s in h.wire[-2:]] == ["ACK", "BYE"]
    h.deliver(far.respond(h.last("BYE"), 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.error == "unusable SDP answer"
    assert ended.cdr.hangup_reason is HangupReason.ERROR
    assert ended.cdr.hangup_by is HangupBy.LOCAL


def test_first_provisional_at_is_the_first_1xx_after_100_trying_yet_every_1xx_is_reported() -> (
    None
):
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    started = h.now
    invite = h.last("INVITE")
    h.advance(0.02)
    h.deliver(far.respond(invite, 100))  # the first hop's round trip, not post-dial delay
    h.advance(2.5)
    h.deliver(far.respond(invite, 183))
    rang_at = h.now
    h.advance(1)
    h.deliver(far.respond(invite, 180))
    h.deliver(far.answer(invite))
    h.core.confirm_answer(call_id, h.now)
    h.core.bye(call_id, h.now)
    h.flush()
    h.deliver(far.respond(h.last("BYE"), 200))
    assert [e.status_code for e in h.events_of(ProvisionalReceived)] == [100, 183, 180]
    cdr = h.terminal(call_id).cdr
    assert cdr.first_provisional_at == rang_at
    assert cdr.first_provisional_at - started == pytest.approx(2.52)


def test_a_call_that_only_got_100_trying_has_no_first_provisional() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 100))
    h.core.cancel(call_id, h.now)  # a 100 is a provisional response: the CANCEL goes at once
    assert len(h.flush()) == 1 and h.last("CANCEL").via_branch == invite.via_branch
    h.deliver(far.respond(h.last("CANCEL"), 200))
    h.deliver(far.respond(invite, 487))
    cdr = h.terminal(call_id).cdr
    assert cdr.first_provisional_at is None
    assert [e.status_code for e in h.events_of(ProvisionalReceived)] == [100]


def test_early_sdp_from_183_serves_a_2xx_without_body() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 183, body=ANSWER_SDP))
    progress = h.events_of(ProvisionalReceived)
    assert [(e.status_code, e.has_sdp) for e in progress] == [(183, True)]
    h.deliver(far.answer(invite, body=b""))
    assert h.events_of(AnswerReceived)[0].sdp == ANSWER_SDP
    assert h.core.confirm_answer(call_id, h.now)


def test_srtp_offer_returns_the_key_when_the_answer_takes_srtp() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial(offer_srtp=True)
    invite = h.last("INVITE")
    offered_key = re.search(rb"inline:(\S+)", invite.body)
    assert offered_key is not None
    srtp_answer = ANSWER_SDP.replace(b"RTP/AVP", b"RTP/SAVP") + (
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"A" * 40 + b"\r\n"
    )
    assert parse_answer(srtp_answer).crypto is not None
    h.deliver(far.answer(invite, body=srtp_answer))
    h.core.confirm_answer(call_id, h.now)
    h.flush()
    assert h.events_of(DialogEstablished)[0].srtp_key == offered_key.group(1).decode()
    h.core.bye(call_id, h.now)
    h.flush()
    h.deliver(far.respond(h.last("BYE"), 200))
    assert h.terminal(call_id).cdr.srtp is True


def test_compact_header_forms_are_understood() -> None:
    h = Harness()
    call_id = h.dial()
    invite = h.last("INVITE")
    compact = (
        "SIP/2.0 200 OK\r\n"
        f"v: {invite.header('via')}\r\n"
        f"f: {invite.header('from')}\r\n"
        f"t: {invite.header('to')};tag=zz\r\n"
        f"i: {invite.call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "m: <sip:callee@192.0.2.10>\r\n"
        "c: application/sdp\r\n"
        f"l: {len(ANSWER_SDP)}\r\n\r\n"
    ).encode() + ANSWER_SDP
    h.deliver(compact)
    assert h.events_of(AnswerReceived)[0].call_id == call_id


def test_responses_fall_back_to_the_call_id_when_the_branch_is_mangled() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    ringing = far.respond(invite, 180)
    ringing.set_header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKrewritten")
    h.deliver(ringing)
    assert [e.status_code for e in h.events_of(ProvisionalReceived)] == [180]
    assert h.core.stats.stray_responses == 0
    assert h.core.leg_count == 1 and call_id


def test_max_duration_byes_after_answer() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far, max_duration=60.0)
    h.advance(59.9)
    assert h.sent_requests("BYE") == []
    h.advance(0.1)
    bye = h.last("BYE")
    assert "Maximum call duration" in (bye.header("reason") or "")
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.billsec == 60


# -- digest authentication --------------------------------------------------------------------


def _challenge(
    far: FarEnd, invite: Request, status: int, nonce: str, stale: bool = False
) -> Response:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    value = f'Digest realm="carrier", nonce="{nonce}", qop="auth", algorithm=MD5'
    if stale:
        value += ", stale=true"
    return far.respond(invite, status, headers=[(header, value)])


@pytest.mark.parametrize(
    ("status", "answer_header"), [(401, "authorization"), (407, "proxy-authorization")]
)
def test_digest_challenge_is_answered_once(status: int, answer_header: str) -> None:
    from sipstack.auth import parse_authorization, verify_authorization
    from tests.fakes import CREDENTIALS

    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=CREDENTIALS)
    first = h.last("INVITE")
    h.deliver(_challenge(far, first, status, "n1"))
    assert h.last("ACK").via_branch == first.via_branch
    second = h.last("INVITE")
    assert second.cseq == (2, "INVITE")
    assert second.via_branch != first.via_branch
    assert second.call_id == first.call_id and second.from_tag == first.from_tag
    creds = parse_authorization(second.header(answer_header) or "")
    assert (creds.username, creds.realm, creds.nonce, creds.nc) == ("alice", "carrier", "n1", 1)
    assert creds.uri == second.uri
    assert verify_authorization(creds, password="secret", method="INVITE")
    h.deliver(far.answer(second))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    assert h.last("ACK").cseq == (2, "ACK")
    assert h.last("ACK").header(answer_header) == second.header(answer_header)
    assert h.core.stats.auth_retries == 1


def test_second_challenge_for_the_same_credentials_fails_the_leg() -> None:
    from tests.fakes import CREDENTIALS

    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=CREDENTIALS)
    h.deliver(_challenge(far, h.last("INVITE"), 401, "n1"))
    h.deliver(_challenge(far, h.last("INVITE"), 401, "n2"))
    failed = h.terminal(call_id)
    assert isinstance(failed, LegFailed)
    assert failed.status_code == 401
    assert "authentication failed" in (failed.cdr.error or "")
    assert failed.cdr.hangup_reason is HangupReason.ERROR
    assert len(h.sent_requests("INVITE")) == 2


def test_stale_nonce_is_answered_again() -> None:
    from tests.fakes import CREDENTIALS

    h = Harness()
    far = FarEnd()
    h.dial(credentials=CREDENTIALS)
    h.deliver(_challenge(far, h.last("INVITE"), 407, "n1"))
    h.deliver(_challenge(far, h.last("INVITE"), 407, "n2", stale=True))
    third = h.last("INVITE")
    assert third.cseq == (3, "INVITE")
    assert 'nonce="n2"' in (third.header("proxy-authorization") or "")


def test_challenge_without_credentials_fails_clearly() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.deliver(_challenge(far, h.last("INVITE"), 407, "n1"))
    failed = h.terminal(call_id)
    assert "authentication failed" in (failed.cdr.error or "")
    assert "no credentials" in (failed.cdr.error or "")


def test_422_to_invite_raises_session_expires_to_min_se_once() -> None:
    h = Harness(config=core_config(session_expires=90))
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), 422, headers=[("Min-SE", "600")]))
    retry = h.last("INVITE")
    assert retry.cseq == (2, "INVITE")
    assert retry.header("session-expires") == "600"
    assert retry.header("min-se") == "600"
    h.deliver(far.respond(retry, 422, headers=[("Min-SE", "1200")]))
    failed = h.terminal(call_id)
    assert failed.status_code == 422
    assert len(h.sent_requests("INVITE")) == 2


def test_dial_target_transport_field_is_used_when_the_uri_is_silent() -> None:
    h = Harness()
    request = dial_request()
    request = type(request)(
        target=DialTarget(
            request_uri="sip:bob@carrier.example",
            signaling_addr="192.0.2.10",
            transport=Transport.TCP,
        )
    )
    h.dial(request)
    sent = h.sent_requests("INVITE")[0]
    assert sent.out.transport is Transport.TCP
    assert isinstance(parse_message(sent.out.data), Request)


def test_non_ascii_display_name_goes_out_as_utf8_in_quotes() -> None:
    h = Harness()
    h.dial(caller_display_name="Jürgen Müller\r\nX-Evil: 1")
    invite = parse_message(h.sent_requests("INVITE")[0].out.data)
    from_value = invite.header("from") or ""
    assert from_value.startswith('"Jürgen Müller  X-Evil: 1" <sip:outbound@192.0.2.1>;tag=')
    assert not invite.has_header("x-evil")


# A 2xx for an INVITE we never sent is discarded (RFC 3261 §17.1.1.2 and §13.2.2.4 are about
# our own transactions): ACKing and BYEing it to the Contact it names would amplify a forgery.


def _forged_invite(call_id: str = "forged@203.0.113.9", from_tag: str = "evil") -> Request:
    return parse_message(
        (
            "INVITE sip:callee@192.0.2.10 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKforged;rport\r\n"
            f"From: <sip:outbound@192.0.2.1>;tag={from_tag}\r\n"
            "To: <sip:callee@192.0.2.10>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )  # type: ignore[return-value]


def test_a_2xx_for_an_invite_we_never_sent_is_dropped_not_acked_or_byed() -> None:
    h = Harness()
    victim = FarEnd(tag="v", contact="<sip:victim@198.51.100.7:5060>")
    assert h.deliver(victim.answer(_forged_invite())) == []
    h.advance(40)
    assert h.wire == []
    assert h.core.stats.dropped_answers == 1 and h.core.stats.orphan_answers == 0


def test_a_2xx_with_a_live_legs_call_id_but_not_our_from_tag_is_dropped() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    before = len(h.wire)
    victim = FarEnd(tag="v2", contact="<sip:victim@198.51.100.7:5060>")
    h.deliver(victim.answer(_forged_invite(call_id=call_id)))
    h.advance(1)
    assert len(h.wire) == before
    assert h.core.stats.dropped_answers == 1
    assert h.core.is_established(call_id)


def test_remembered_tables_are_bounded_by_the_configured_cap() -> None:
    h = Harness(config=core_config(max_remembered=3))
    invites = []
    for _ in range(6):
        call_id = h.dial()
        invites.append(h.last("INVITE"))
        assert h.core.drop(call_id)  # its INVITE transaction is detached
    detached = [tx for tx in h.core.shared._transactions if tx.state is TxState.DETACHED]
    assert len(detached) == 3  # the oldest were forgotten
    for index, invite in enumerate(invites):
        h.deliver(FarEnd(tag=f"t{index}").answer(invite))
    assert h.core.stats.orphan_answers == 3 and h.core.stats.dropped_answers == 3
    assert len(h.core.shared._orphan_acks) == 3
    assert len(h.core.shared._sent_invites) <= 3


def test_a_forks_2xx_without_sdp_does_not_take_another_forks_183_answer() -> None:
    """RFC 3264: an answer belongs to its (early) dialog; fork b never answered our offer."""
    h = Harness()
    fork_a = FarEnd(tag="fork-a")
    fork_b = FarEnd(tag="fork-b", contact="<sip:b@192.0.2.21:5060>")
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(fork_a.respond(invite, 183, body=ANSWER_SDP))
    h.deliver(fork_b.answer(invite, body=b""))
    assert h.events_of(AnswerReceived) == []  # no usable answer in fork b's dialog
    bye = h.last("BYE")
    assert bye.to_tag == "fork-b"
    h.deliver(fork_b.respond(bye, 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded) and ended.cdr.error == "unusable SDP answer"


@pytest.mark.parametrize(("transport", "alias"), [
    (Transport.UDP, False), (Transport.TCP, True), (Transport.TLS, True),
])
def test_via_asks_for_connection_reuse_over_tcp_and_tls(transport: Transport, alias: bool) -> None:
    # RFC 5923 §5: `alias` lets the far end send its requests back over our connection.
    h = Harness()
    far = FarEnd()
    call_id = h.dial(transport=transport)
    invite = h.last("INVITE")
    assert (invite.header("via") or "").endswith(";rport;alias" if alias else ";rport")
    h.deliver(far.respond(invite, 180), transport=transport)
    h.core.cancel(call_id, h.now)
    h.flush()
    assert h.last("CANCEL").header("via") == invite.header("via")
