"""CarrierCore with a fake clock: outcomes, INVITE server transactions, dialogs, session timers."""

from __future__ import annotations

import random

import pytest

from carrier.auth import DigestAuthenticator
from carrier.config import CarrierConfig, Outcome
from carrier.core import CarrierCore
from sipstack.auth import build_authorization, parse_challenge
from sipstack.config import TimerConfig
from sipstack.message import Request, Response
from sipstack.transport import Transport
from tests.carrier_support import (
    OFFER,
    Caller,
    Dialog,
    FakeClock,
    only_request,
    only_response,
    statuses,
)

T1 = 0.5


def make(transport: Transport = Transport.UDP, **settings: object) -> Caller:
    config = CarrierConfig(local_address=("127.0.0.1", 5070), **settings)  # type: ignore[arg-type]
    core = CarrierCore(config, rng=random.Random(7))
    return Caller(core, FakeClock(), transport)


def answer_call(caller: Caller, ring: float = 0.0):  # type: ignore[no-untyped-def]
    dialog, sent = caller.invite()
    if ring:
        sent += caller.advance(ring)
    ok = only_response(sent, 200)
    assert caller.ack(dialog, ok) == []
    return dialog, ok


def test_answered_call_rings_then_answers_pcma_and_ends_on_callers_bye() -> None:
    caller = make(ring=2.0)
    dialog, sent = caller.invite()
    assert statuses(sent) == [100, 180]
    ringing = only_response(sent, 180)
    assert ringing.to_tag and ringing.header("contact") == "<sip:carrier@127.0.0.1:5070>"
    assert sent[0].to_tag is None  # 100 Trying carries no tag
    assert caller.core.next_deadline() == pytest.approx(caller.clock.now + 2.0)
    assert caller.advance(1.9) == []
    ok = only_response(caller.advance(0.1), 200)
    assert ok.to_tag == ringing.to_tag
    assert ok.header("content-type") == "application/sdp"
    assert b"m=audio " in ok.body and b" RTP/AVP 8 101" in ok.body
    assert b"a=rtpmap:8 PCMA/8000" in ok.body
    assert caller.ack(dialog, ok) == []
    assert caller.advance(10) == []  # ACK stopped the 200's retransmission
    bye = caller.in_dialog(dialog, "BYE")
    assert statuses(caller.send(bye)) == [200]
    assert caller.core.active_calls == 0
    assert caller.core.stats.answered == 1 and caller.core.stats.caller_hangups == 1
    assert statuses(caller.send(bye)) == [200]  # a retransmitted BYE gets the same answer
    assert caller.core.stats.retransmissions_received == 1


def test_unacked_200_is_retransmitted_doubling_to_t2_then_the_call_is_byed() -> None:
    caller = make(ring=0.0)
    start = caller.clock.now
    _dialog, sent = caller.invite()
    assert statuses(sent) == [100, 180, 200]
    times = []
    byes: list[Request] = []
    while (deadline := caller.core.next_deadline()) is not None and deadline <= start + 64 * T1:
        caller.clock.now = deadline
        caller.core.handle_timer(deadline)
        for message in caller.drain():
            if isinstance(message, Response):
                assert message.status_code == 200
                times.append(round(message_time := caller.clock.now - start, 3))
                assert message_time <= 64 * T1
            else:
                byes.append(message)
    gaps = [round(b - a, 3) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0]
    assert set(gaps[4:]) == {4.0}
    bye = only_request(byes, "BYE")
    assert bye.header("reason") == 'SIP;cause=408;text="ACK not received"'
    assert caller.core.stats.ack_timeouts == 1
    assert statuses(caller.respond(bye, 200)) == []
    assert caller.core.active_calls == 0


@pytest.mark.parametrize(("outcome", "status", "counter"),
                         [(Outcome.BUSY, 486, "busy"), (Outcome.REJECT, 603, "rejected")])
def test_rejections_ring_then_send_a_final_retransmitted_until_acked(
    outcome: Outcome, status: int, counter: str
) -> None:
    caller = make(weights={outcome: 1.0}, ring=1.0)
    dialog, sent = caller.invite()
    assert statuses(sent) == [100, 180]
    final = only_response(caller.advance(1.0), status)
    assert final.to_tag == only_response(sent, 180).to_tag
    assert statuses(caller.advance(T1)) == [status]  # Timer G
    assert statuses(caller.send(dialog.invite)) == [status]  # INVITE retransmission
    assert caller.ack(dialog, final) == []
    assert caller.advance(30) == []
    assert getattr(caller.core.stats, counter) == 1
    assert caller.core.active_calls == 0


def test_non2xx_never_acked_stops_after_timer_h() -> None:
    caller = make(weights={Outcome.BUSY: 1.0}, ring=0.0)
    caller.invite()
    sent = caller.run_until(caller.clock.now + 64 * T1 + 1)
    assert 5 <= len(sent) <= 10 and set(statuses(sent)) == {486}
    assert caller.core.next_deadline() is None


def test_no_answer_rings_until_cancel_then_487() -> None:
    caller = make(weights={Outcome.NO_ANSWER: 1.0}, ring=1.0)
    dialog, _sent = caller.invite()
    assert caller.advance(60) == []
    sent = caller.send(caller.cancel(dialog))
    assert statuses(sent) == [200, 487]
    terminated = only_response(sent, 487)
    assert terminated.cseq == (1, "INVITE")
    assert only_response(sent, 200).cseq == (1, "CANCEL")
    assert caller.ack(dialog, terminated) == []
    assert caller.advance(30) == []
    assert caller.core.stats.cancelled == 1 and caller.core.active_calls == 0


def test_no_answer_nobody_cancels_ends_with_480_after_max_ring() -> None:
    caller = make(weights={Outcome.NO_ANSWER: 1.0}, max_ring=30.0)
    caller.invite()
    assert statuses(caller.advance(29)) == []
    assert statuses(caller.advance(1)) == [480]
    assert caller.core.stats.no_answer == 1


def test_cancel_after_the_final_response_changes_nothing_and_unknown_cancel_gets_481() -> None:
    caller = make(ring=0.0)
    dialog, _ok = answer_call(caller)
    assert statuses(caller.send(caller.cancel(dialog))) == [200]
    assert caller.core.active_calls == 1
    stray = caller.cancel(dialog)
    stray.set_header("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKnothing")
    assert statuses(caller.send(stray)) == [481]


def test_hold_ends_the_call_with_a_bye_carrying_the_reason_retransmitted_until_answered() -> None:
    reason = 'Q.850;cause=16;text="Normal call clearing"'
    caller = make(ring=0.0, hold=5.0, remote_hangup_reason=reason)
    dialog, ok = answer_call(caller)
    assert caller.advance(4.9) == []
    bye = only_request(caller.advance(0.1), "BYE")
    assert bye.header("reason") == reason
    assert bye.uri == "sip:outbound@127.0.0.1:5062"  # the INVITE's Contact
    assert bye.from_tag == ok.to_tag and bye.to_tag == dialog.from_tag
    assert bye.call_id == dialog.call_id and bye.cseq[1] == "BYE"
    assert only_request(caller.advance(T1), "BYE").via_branch == bye.via_branch  # Timer E
    assert caller.respond(bye, 200) == []
    assert caller.core.active_calls == 0 and caller.core.stats.carrier_hangups == 1
    assert caller.advance(60) == []


def test_unanswered_bye_gives_up_after_timer_f() -> None:
    caller = make(ring=0.0, hold=1.0)
    answer_call(caller)
    sent = caller.run_until(caller.clock.now + 1 + 64 * T1 + 1)
    assert {m.method for m in sent if isinstance(m, Request)} == {"BYE"}
    assert caller.core.stats.bye_timeouts == 1 and caller.core.active_calls == 0


def test_in_dialog_requests_are_answered_and_unknown_dialogs_get_481() -> None:
    caller = make(ring=0.0)
    dialog, _ok = answer_call(caller)
    for method in ("UPDATE", "OPTIONS", "INFO"):
        assert statuses(caller.send(caller.in_dialog(dialog, method))) == [200]
    assert statuses(caller.send(caller.in_dialog(dialog, "REFER"))) == [405]
    reinvite = caller.in_dialog(dialog, "INVITE", body=OFFER)
    ok = only_response(caller.send(reinvite), 200)
    assert ok.cseq == (reinvite.cseq[0], "INVITE") and b"PCMA" in ok.body
    assert statuses(caller.advance(T1)) == [200]  # re-INVITE's 200 also waits for its ACK
    dialog.invite = reinvite
    assert caller.ack(dialog, ok) == []
    assert caller.advance(10) == []
    wrong = caller.in_dialog(dialog, "BYE")
    wrong.set_header("To", "<sip:+15551234567@carrier.test>;tag=not-ours")
    assert statuses(caller.send(wrong)) == [481]
    assert caller.core.active_calls == 1


def test_out_of_dialog_options_lists_capabilities_and_bye_without_dialog_gets_481() -> None:
    caller2 = make()
    probe = Dialog(call_id="ping@test", from_tag="p1")
    options = caller2._request("OPTIONS", probe, 1)
    ok = only_response(caller2.send(options), 200)
    assert "INVITE" in (ok.header("allow") or "") and ok.header("accept") == "application/sdp"
    stray_bye = caller2._request("BYE", probe, 2)
    assert statuses(caller2.send(stray_bye)) == [481]
    assert statuses(caller2.send(caller2._request("MESSAGE", probe, 3))) == [405]


def test_session_expires_in_200_and_no_refresh_ends_the_call_with_408_reason() -> None:
    caller = make(ring=0.0, session_expires=120)
    dialog, sent = caller.invite(headers=[("Supported", "timer")])
    ok = only_response(sent, 200)
    assert ok.header("session-expires") == "120;refresher=uac"
    assert ok.header("require") == "timer"
    caller.ack(dialog, ok)
    # refreshes keep it alive past several intervals
    for _ in range(4):
        assert caller.advance(60) == []
        update = caller.in_dialog(dialog, "UPDATE", headers=[("Session-Expires", "120")])
        refreshed = only_response(caller.send(update), 200)
        assert refreshed.header("session-expires") == "120;refresher=uac"
    assert caller.core.stats.session_refreshes == 4
    # RFC 4028 §10: without a refresh the non-refresher BYEs at expiry - min(32, S/3)
    assert caller.advance(87.9) == []
    bye = only_request(caller.advance(0.1), "BYE")
    assert bye.header("reason") == 'SIP;cause=408;text="Session timer expired"'
    assert caller.core.stats.session_expired == 1


def test_session_interval_follows_a_smaller_offer_and_no_require_without_support() -> None:
    caller = make(ring=0.0, session_expires=1800)
    _dialog, sent = caller.invite(headers=[("Session-Expires", "300")])
    ok = only_response(sent, 200)
    assert ok.header("session-expires") == "300;refresher=uac"
    assert ok.header("require") is None


def test_weights_are_drawn_in_proportion() -> None:
    caller = make(weights={Outcome.ANSWER: 3.0, Outcome.BUSY: 1.0}, ring=1.0)
    for _ in range(2000):
        caller.invite()
    caller.advance(1.0)
    stats = caller.core.stats
    assert stats.answered + stats.busy == 2000
    assert 0.70 < stats.answered / 2000 < 0.80


def test_bad_bytes_are_counted_not_raised_and_bad_headers_get_400() -> None:
    caller = make()
    for junk in (b"", b"\x00\xff garbage", b"INVITE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 999\r\n"):
        assert caller.send(junk) == []
    assert caller.core.stats.parse_errors == 4
    broken = caller._request("INVITE", Dialog(call_id="bad@test", from_tag="b1"), 1, body=OFFER)
    broken.set_header("Contact", "<not a uri")
    assert statuses(caller.send(broken)) == [400]
    assert caller.core.active_calls == 0


def test_offer_without_audio_is_refused_with_488_and_late_offer_gets_an_sdp_offer() -> None:
    caller = make(ring=0.0)
    video_only = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n" \
        b"m=video 5000 RTP/AVP 96\r\n"
    _dialog, sent = caller.invite(body=video_only)
    assert statuses(sent) == [488]
    _dialog, sent = caller.invite(body=b"")
    ok = only_response(sent, 200)
    assert b"m=audio" in ok.body and b"PCMA" in ok.body


def test_srtp_offer_is_answered_with_a_key_of_our_own() -> None:
    caller = make(ring=0.0)
    srtp_offer = OFFER.replace(b"RTP/AVP", b"RTP/SAVP") + \
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    _dialog, sent = caller.invite(body=srtp_offer)
    body = only_response(sent, 200).body
    assert b"RTP/SAVP" in body and b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in body
    assert b"WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz" not in body


def test_tcp_sends_no_retransmissions_and_a_lost_connection_drops_its_calls() -> None:
    caller = make(Transport.TCP, ring=0.0)
    _dialog, sent = caller.invite()
    assert statuses(sent) == [100, 180, 200]
    contact = only_response(sent, 200).header("contact")
    assert contact == "<sip:carrier@127.0.0.1:5070;transport=tcp>"
    assert caller.advance(5) == []
    caller.core.connection_lost(Transport.TCP, ("127.0.0.1", 5062))
    assert caller.core.active_calls == 0


def test_merged_invite_with_the_same_call_id_gets_482() -> None:
    caller = make(ring=5.0)
    dialog, _ = caller.invite()
    again = caller.reinvite_invite(dialog, headers=[])
    assert statuses(caller.send(again)) == [482]
    assert caller.core.active_calls == 1


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="at least one outcome weight"):
        CarrierConfig(weights={Outcome.ANSWER: 0.0})
    with pytest.raises(ValueError, match="session_expires must be at least 90"):
        CarrierConfig(session_expires=30)
    with pytest.raises(ValueError, match="needs an authenticator"):
        CarrierCore(CarrierConfig(challenge=True))
    assert CarrierConfig(timers=TimerConfig(t1=0.1)).timers.timer_b == pytest.approx(6.4)


def _challenged_caller() -> Caller:
    config = CarrierConfig(local_address=("127.0.0.1", 5070), ring=0.0, challenge=True,
                           realm="carrier.test", username="alice", password="s3cret")
    auth = DigestAuthenticator(realm="carrier.test", username="alice", password="s3cret",
                               secret=b"k" * 32)
    return Caller(CarrierCore(config, rng=random.Random(3), authenticator=auth), FakeClock())


def _answer_challenge(
    caller: Caller, dialog: Dialog, challenge: Response, password: str
) -> Request:
    parsed = parse_challenge(challenge.header("www-authenticate") or "")
    authorization = build_authorization(
        parsed, username="alice", password=password, method="INVITE",
        uri=dialog.invite.uri, nc=1, random_bytes=lambda n: b"\x01" * n,
    )
    return caller.reinvite_invite(dialog, headers=[("Authorization", authorization)])


def test_challenge_then_right_credentials_ring_and_answer() -> None:
    caller = _challenged_caller()
    dialog, sent = caller.invite()
    unauthorized = only_response(sent, 401)
    parsed = parse_challenge(unauthorized.header("www-authenticate") or "")
    assert parsed.realm == "carrier.test" and parsed.qop == ("auth",)
    assert caller.ack(dialog, unauthorized) == []
    retry = _answer_challenge(caller, dialog, unauthorized, "s3cret")
    assert statuses(caller.send(retry)) == [100, 180, 200]
    assert caller.core.stats.challenged == 1 and caller.core.stats.answered == 1


def test_challenge_then_wrong_password_gets_403() -> None:
    caller = _challenged_caller()
    dialog, sent = caller.invite()
    unauthorized = only_response(sent, 401)
    caller.ack(dialog, unauthorized)
    retry = _answer_challenge(caller, dialog, unauthorized, "guess")
    assert statuses(caller.send(retry)) == [403]
    assert caller.core.stats.auth_failed == 1 and caller.core.active_calls == 0


def test_expired_nonce_with_right_password_is_challenged_again_as_stale() -> None:
    caller = _challenged_caller()
    dialog, sent = caller.invite()
    unauthorized = only_response(sent, 401)
    caller.ack(dialog, unauthorized)
    caller.advance(301)
    retry = _answer_challenge(caller, dialog, unauthorized, "s3cret")
    again = only_response(caller.send(retry), 401)
    assert parse_challenge(again.header("www-authenticate") or "").stale


def test_an_extension_we_lack_in_require_gets_420_naming_it() -> None:
    caller = make(ring=0.0)
    _dialog, sent = caller.invite(headers=[("Require", "100rel, timer")])
    refused = only_response(sent, 420)
    assert refused.header("unsupported") == "100rel"
    assert caller.core.active_calls == 0


def test_a_session_interval_below_min_se_gets_422_with_our_min_se() -> None:
    caller = make(ring=0.0, session_expires=120)
    dialog, sent = caller.invite(headers=[("Session-Expires", "60")])
    too_small = only_response(sent, 422)
    assert too_small.header("min-se") == "90"
    caller.ack(dialog, too_small)
    retry = caller.reinvite_invite(dialog, headers=[("Session-Expires", "90")])
    ok = only_response(caller.send(retry), 200)
    assert ok.header("session-expires") == "90;refresher=uac"
    caller.ack(dialog, ok)
    update = caller.in_dialog(dialog, "UPDATE", headers=[("Session-Expires", "30")])
    assert statuses(caller.send(update)) == [422]
