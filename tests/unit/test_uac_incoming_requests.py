"""Review findings on what we answer: tags, Via stamping, Require, failures resent until their
ACK (Timer G/H), and answers to the peer's re-offers (RFC 3264 §8)."""

from __future__ import annotations

from sipstack.message import Request, Response
from sipstack.sdp import parse_answer
from sipstack.transport import Transport
from tests.fakes import ANSWER_SDP, TRUNK, FarEnd, Harness, core_config, establish

SDP = [("Content-Type", "application/sdp")]
PCMU_ONLY = ANSWER_SDP.replace(b"RTP/AVP 8 101", b"RTP/AVP 0").replace(
    b"a=rtpmap:8 PCMA/8000\r\n", b""
)


def _responses(h: Harness, method: str) -> list[Response]:
    return [r for r in h.sent_responses() if r.cseq[1] == method]


def _out_of_dialog(
    method: str, *, branch: str = "z9hG4bKood1", via_host: str = "192.0.2.10"
) -> Request:
    return Request(
        method,
        "sip:outbound@192.0.2.1:5060",
        [
            ("Via", f"SIP/2.0/UDP {via_host}:5060;branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", "<sip:scanner@192.0.2.10>;tag=s1"),
            ("To", "<sip:outbound@192.0.2.1>"),
            ("Call-ID", f"ood-{branch}"),
            ("CSeq", f"1 {method}"),
        ],
    )


# -- the responses themselves -----------------------------------------------------------------


def test_501_to_a_request_without_to_tag_adds_one() -> None:
    """§8.2.6.2: every response but 100 to a request without a To tag carries our tag."""
    h = Harness()
    h.deliver(_out_of_dialog("SUBSCRIBE"))
    [refused] = _responses(h, "SUBSCRIBE")
    assert refused.status_code == 501
    assert refused.to_tag
    assert refused.header("allow")


def test_responses_stamp_received_and_rport_on_the_top_via() -> None:
    """§18.2.1 and RFC 3581 §4: received (and rport's value) tell the peer where it is."""
    h = Harness()
    h.deliver(_out_of_dialog("OPTIONS", via_host="10.0.0.5"), source=("203.0.113.9", 41000))
    [ok] = _responses(h, "OPTIONS")
    assert ok.header("via") == (
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKood1;rport=41000;received=203.0.113.9"
    )
    assert h.wire[-1].out.address == ("203.0.113.9", 41000)
    far = FarEnd()
    _, invite = establish(h, far)
    info = far.request("INFO", invite)  # no rport, the sent-by host is the source: unchanged
    info.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKplain")
    h.deliver(info)
    assert _responses(h, "INFO")[-1].header("via") == info.header("via")
    info = far.request("INFO", invite)  # no rport, another source: received only
    info.set_header("Via", "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKnat")
    h.deliver(info, source=("203.0.113.9", 5070))
    assert _responses(h, "INFO")[-1].header("via") == (
        "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKnat;received=203.0.113.9"
    )


def test_require_of_an_extension_we_lack_gets_420_and_timer_is_fine() -> None:
    """§8.2.2.3: we implement no 100rel; a request requiring it must not be taken."""
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.deliver(far.request("UPDATE", invite, headers=[("Require", "100rel, timer")]))
    refused = _responses(h, "UPDATE")[-1]
    assert refused.status_code == 420
    assert refused.header("unsupported") == "100rel"
    h.deliver(far.request("UPDATE", invite, headers=[("Require", "timer")]))
    assert _responses(h, "UPDATE")[-1].status_code == 200
    assert h.core.is_established(call_id)


# -- failures to INVITEs are resent until their ACK -------------------------------------------


def _failure_times(h: Harness, start: float) -> list[float]:
    return [
        round(s.at - start, 6)
        for s in h.wire
        if isinstance(s.message, Response) and s.message.cseq[1] == "INVITE"
    ]


def test_failure_to_an_invite_is_resent_at_timer_g_until_timer_h() -> None:
    h = Harness()
    start = h.now
    h.deliver(_out_of_dialog("INVITE"))
    h.advance(40)
    assert _failure_times(h, start) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert {r.status_code for r in _responses(h, "INVITE")} == {403}
    assert h.core.next_deadline() is None


def test_ack_stops_the_failure_retransmissions() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    start = h.now
    reinvite = far.request("INVITE", invite, headers=SDP, body=PCMU_ONLY)
    h.deliver(reinvite)
    assert _responses(h, "INVITE")[-1].status_code == 488  # our codec is not in the offer
    h.advance(2)
    ack = far.request("ACK", invite, cseq=reinvite.cseq[0], branch=reinvite.via_branch)
    assert h.deliver(ack) == []
    h.advance(30)
    assert _failure_times(h, start) == [0, 0.5, 1.5]


def test_failures_over_tcp_are_not_resent() -> None:
    h = Harness()
    h.deliver(_out_of_dialog("INVITE"), transport=Transport.TCP)
    h.advance(40)
    assert len(_responses(h, "INVITE")) == 1


# -- the peer's re-offers -------------------------------------------------------------------------


def test_reinvite_offers_are_answered_keeping_the_session_and_the_o_version_steady() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    ours = invite.body.decode().split("\r\n")[1].split()  # o=outbound <id> <version> ...
    answers = []
    for _ in range(2):
        reinvite = far.request("INVITE", invite, headers=SDP, body=ANSWER_SDP)
        h.deliver(reinvite)
        ok = _responses(h, "INVITE")[-1]
        assert ok.status_code == 200
        answers.append(ok.body)
        h.deliver(far.request("ACK", invite, cseq=reinvite.cseq[0], branch="z9hG4bKack"))
    assert answers[0] == answers[1]
    origin = answers[0].decode().split("\r\n")[1].split()
    assert origin[:2] == ours[:2] and origin[3:] == ours[3:]
    assert int(origin[2]) == int(ours[2]) + 1  # changed once (narrowed), then steady
    assert parse_answer(answers[0]).codec_name == "PCMA"
    assert h.core.is_established(call_id)


def test_offerless_reinvite_gets_our_session_as_the_offer() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    h.deliver(far.request("INVITE", invite))
    ok = _responses(h, "INVITE")[-1]
    assert ok.status_code == 200 and ok.body == invite.body


def test_update_offer_gets_an_answer_not_our_first_offer() -> None:
    h = Harness()
    far = FarEnd()
    _, invite = establish(h, far)
    h.deliver(far.request("UPDATE", invite, headers=SDP, body=ANSWER_SDP))
    ok = _responses(h, "UPDATE")[-1]
    assert ok.status_code == 200
    assert ok.header("content-type") == "application/sdp"
    assert parse_answer(ok.body).payload_types == (8, 101)


def test_offers_that_would_change_the_media_are_refused_and_the_call_goes_on() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = establish(h, far)
    h.deliver(far.request("UPDATE", invite, headers=SDP, body=PCMU_ONLY))
    assert _responses(h, "UPDATE")[-1].status_code == 488
    h.deliver(far.request("UPDATE", invite, headers=[("Content-Type", "text/plain")], body=b"hi"))
    refused = _responses(h, "UPDATE")[-1]
    assert refused.status_code == 415
    assert refused.header("accept") == "application/sdp"
    h.deliver(far.request("INVITE", invite, headers=SDP, body=b"v=0\r\ngarbage\r\n"))
    assert _responses(h, "INVITE")[-1].status_code == 400
    assert h.core.is_established(call_id)
    assert h.sent_requests("BYE") == []
    assert h.wire[-1].out.address == TRUNK


def test_responses_kept_for_retransmitted_requests_are_bounded() -> None:
    from sipstack.message import parse_message as _parse

    h = Harness(config=core_config(max_remembered=4))
    for index in range(10):
        options = _parse(
            (
                "OPTIONS sip:outbound@192.0.2.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKopt{index}\r\n"
                "From: <sip:probe@192.0.2.50>;tag=p\r\n"
                "To: <sip:outbound@192.0.2.1>\r\n"
                f"Call-ID: probe-{index}@192.0.2.50\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        h.deliver(options)
    assert len(h.core.shared._sent_responses) == 4
