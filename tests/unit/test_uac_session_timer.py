"""RFC 4028 session timers: our UPDATE refreshes at N/2, 422, failures, and the UAS watchdog."""

from __future__ import annotations

from sipstack.cdr import HangupBy, HangupReason
from sipstack.events import LegEnded
from sipstack.message import Request, Response
from tests.fakes import FarEnd, Harness, core_config, establish


def _established(h: Harness, far: FarEnd, session_expires: str) -> tuple[str, Request, float]:
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.answer(invite, headers=[("Session-Expires", session_expires)]))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    return call_id, invite, h.now


def _update_times(h: Harness, since: float) -> list[float]:
    return [s.at - since for s in h.sent_requests("UPDATE")]


def test_uac_refresher_sends_update_at_half_the_interval() -> None:
    h = Harness(config=core_config(session_expires=1800))
    far = FarEnd()
    call_id, invite, start = _established(h, far, "1800;refresher=uac")
    h.advance(899.9)
    assert h.sent_requests("UPDATE") == []
    h.advance(0.1)
    update = h.last("UPDATE")
    assert _update_times(h, start) == [900]
    assert update.cseq == (2, "UPDATE")
    assert update.uri == "sip:callee@192.0.2.10:5060"
    assert update.header("session-expires") == "1800;refresher=uac"
    assert update.header("min-se") == "90"
    assert update.header("supported") == "timer"
    assert update.header("contact") == invite.header("contact")
    assert update.via_branch != invite.via_branch
    h.deliver(
        far.respond(update, 200, headers=[("Session-Expires", "1200;refresher=uac")])
    )  # a smaller interval in the 2xx is adopted
    h.advance(600)
    assert _update_times(h, start) == [900, 1500]
    assert h.last("UPDATE").header("session-expires") == "1200;refresher=uac"
    assert h.core.stats.session_refreshes_sent == 2
    assert h.core.is_established(call_id)


def test_no_refresher_in_the_2xx_means_we_refresh() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    _, _, start = _established(h, far, "600")
    h.advance(300)
    assert _update_times(h, start) == [300]


def test_no_session_expires_in_the_2xx_means_no_session_timer() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.advance(5000)
    assert h.sent_requests("UPDATE") == [] and h.sent_requests("BYE") == []
    assert h.core.is_established(call_id)


def test_422_to_update_raises_to_min_se_and_retries_once() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, _ = _established(h, far, "600;refresher=uac")
    h.advance(300)
    first = h.last("UPDATE")
    h.deliver(far.respond(first, 422, headers=[("Min-SE", "1000")]))
    retry = h.last("UPDATE")
    assert retry.cseq == (3, "UPDATE")
    assert retry.header("session-expires") == "1000;refresher=uac"
    h.deliver(far.respond(retry, 422, headers=[("Min-SE", "2000")]))
    assert h.sent_requests("BYE") == []  # RFC 4028 §10: the session runs until it expires
    h.advance(300)
    bye = h.last("BYE")
    assert "cause=102" in (bye.header("reason") or "")
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_reason is HangupReason.TIMER_EXPIRED
    assert "422" in (ended.cdr.error or "")


def test_failed_refresh_ends_the_call_with_timer_expired() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, _ = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 481))
    bye = h.last("BYE")
    assert bye.header("reason") == (
        'Q.850;cause=102;text="Recovery on timer expiry", '
        'SIP;cause=408;text="Session timer expired"'
    )
    h.deliver(far.respond(bye, 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.hangup_reason is HangupReason.TIMER_EXPIRED
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.error == "session refresh failed: 481 Call/Transaction Does Not Exist"


def test_unanswered_refresh_ends_the_call_after_timer_f() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, start = _established(h, far, "600;refresher=uac")
    h.advance(300 + 31.9)
    assert h.sent_requests("BYE") == []
    h.advance(0.1)
    bye = h.sent_requests("BYE")[0]
    assert bye.at - start == 332
    h.deliver(far.respond(bye.request, 200))
    assert h.terminal(call_id).cdr.error == "session refresh got no response"


def test_uas_refresher_without_refresh_is_byed_before_expiry() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite, start = _established(h, far, "120;refresher=uas")
    h.advance(60)
    refresh = far.request("UPDATE", invite, headers=[("Session-Expires", "120;refresher=uac")])
    h.deliver(refresh)
    ok = [r for r in h.sent_responses() if r.cseq[1] == "UPDATE"][-1]
    assert ok.status_code == 200
    assert ok.header("session-expires") == "120;refresher=uac"
    assert ok.header("require") == "timer"
    h.advance(87.9)  # expiry minus min(32, 120/3) after the refresh at 60
    assert h.sent_requests("BYE") == [] and h.sent_requests("UPDATE") == []
    h.advance(0.1)
    bye = h.sent_requests("BYE")[0]
    assert bye.at - start == 148
    h.deliver(far.respond(bye.request, 200))
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_reason is HangupReason.TIMER_EXPIRED
    assert ended.cdr.error is None


def test_peer_refresh_below_min_se_gets_422() -> None:
    h = Harness()
    far = FarEnd()
    _, invite, _ = _established(h, far, "1800;refresher=uas")
    h.deliver(far.request("UPDATE", invite, headers=[("Session-Expires", "60")]))
    refused: Response = [r for r in h.sent_responses() if r.cseq[1] == "UPDATE"][-1]
    assert refused.status_code == 422
    assert refused.header("min-se") == "90"


def test_peer_may_hand_the_refresher_role_to_us() -> None:
    h = Harness()
    far = FarEnd()
    _, invite, _ = _established(h, far, "1800;refresher=uas")
    h.advance(100)
    at = h.now
    h.deliver(
        far.request(
            "UPDATE",
            invite,
            headers=[("Session-Expires", "400;refresher=uas"), ("Supported", "timer")],
        )
    )
    h.advance(200)
    assert _update_times(h, at) == [200]


# RFC 4028 §10 / RFC 3261 §12.2.1.2: only 408, 481 or a timeout end the dialog; any other
# failure leaves the session valid until it expires.


def test_refresh_failures_that_do_not_end_the_dialog_keep_the_call_until_expiry() -> None:
    for code in (500, 503, 403, 488):
        h = Harness(config=core_config(session_expires=600))
        far = FarEnd()
        call_id, _, start = _established(h, far, "600;refresher=uac")
        h.advance(300)
        h.deliver(far.respond(h.last("UPDATE"), code))
        assert h.sent_requests("BYE") == [], code
        assert h.core.is_established(call_id), code
        h.advance(299.9)
        assert h.sent_requests("BYE") == [], code
        h.advance(0.1)
        bye = h.sent_requests("BYE")[0]
        assert bye.at - start == 600, code  # the session expired: the watchdog ends it
        h.deliver(far.respond(bye.request, 200))
        ended = h.terminal(call_id)
        assert isinstance(ended, LegEnded)
        assert ended.cdr.hangup_reason is HangupReason.TIMER_EXPIRED


def test_408_to_a_refresh_ends_the_dialog_at_once() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    _, _, start = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 408))
    assert h.sent_requests("BYE")[0].at - start == 300


def test_503_with_retry_after_retries_the_refresh_after_the_delay() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, start = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 503, headers=[("Retry-After", "20")]))
    h.advance(19.9)
    assert _update_times(h, start) == [300]
    h.advance(0.1)
    assert _update_times(h, start) == [300, 320]
    h.deliver(far.respond(h.last("UPDATE"), 200, headers=[("Session-Expires", "600")]))
    h.advance(299.9)
    assert _update_times(h, start) == [300, 320]
    h.advance(0.1)
    assert _update_times(h, start) == [300, 320, 620]
    assert h.sent_requests("BYE") == [] and h.core.is_established(call_id)


def test_a_second_491_does_not_hang_up() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, _ = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 491))
    h.advance(5)
    assert {s.request.cseq for s in h.sent_requests("UPDATE")} == {(2, "UPDATE"), (3, "UPDATE")}
    h.deliver(far.respond(h.last("UPDATE"), 491))
    h.advance(5)
    assert h.last("UPDATE").cseq == (4, "UPDATE")  # each glare is retried after its delay
    assert h.sent_requests("BYE") == [] and h.core.is_established(call_id)


def _answered(h: Harness, far: FarEnd, *headers: tuple[str, str]) -> tuple[str, float]:
    """Dial, answer with these headers and confirm: (call_id, when)."""
    call_id = h.dial()
    h.deliver(far.answer(h.last("INVITE"), headers=list(headers)))
    assert h.core.confirm_answer(call_id, h.now)
    return call_id, h.now


def test_failed_reinvite_refresh_keeps_the_call_until_expiry() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, start = _answered(
        h, far, ("Session-Expires", "600;refresher=uac"), ("Allow", "INVITE, BYE")
    )
    h.advance(300)
    reinvite = h.last("INVITE")
    assert reinvite.cseq[0] == 2
    h.deliver(far.respond(reinvite, 500))
    assert h.sent_requests("BYE") == [] and h.core.is_established(call_id)
    h.advance(300)
    assert h.sent_requests("BYE")[0].at - start == 600


def test_a_session_timer_imposed_by_a_proxy_without_our_asking_is_honoured() -> None:
    """We always send Supported: timer, so a proxy may impose one (RFC 4028 §8.1)."""
    h = Harness(config=core_config(session_expires=None))
    far = FarEnd()
    _, start = _answered(h, far, ("Session-Expires", "180;refresher=uac"), ("Require", "timer"))
    invite = h.sent_requests("INVITE")[0].request
    assert invite.header("session-expires") is None and invite.header("supported") == "timer"
    h.advance(90)
    assert _update_times(h, start) == [90]
    assert h.last("UPDATE").header("session-expires") == "180;refresher=uac"


def test_a_proxy_imposed_uas_refresher_is_policed() -> None:
    h = Harness(config=core_config(session_expires=None))
    _, start = _answered(h, FarEnd(), ("Session-Expires", "180;refresher=uas"))
    h.advance(200)
    assert h.sent_requests("BYE")[0].at - start == 180 - 32
