"""Review findings on the INVITE side: late finals after a CANCEL deadline, 3xx, forks, digest."""

from __future__ import annotations

from sipstack.auth import parse_authorization
from sipstack.cdr import Disposition
from sipstack.events import LegCancelled, LegEnded, LegFailed
from sipstack.message import Request
from tests.fakes import CREDENTIALS, FarEnd, Harness, core_config, establish

PROXY_CHALLENGE = 'Digest realm="carrier", nonce="n-proxy", qop="auth", algorithm=MD5'
UAS_CHALLENGE = 'Digest realm="carrier", nonce="n-uas", qop="auth", algorithm=MD5'


def _ringing(h: Harness, far: FarEnd) -> tuple[str, Request]:
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180))
    return call_id, invite


# -- finals that arrive after we stopped waiting ----------------------------------------------


def test_487_after_the_cancel_deadline_is_still_acked() -> None:
    """§17.1.1.3: every non-2xx final to an INVITE is ACKed, even once the leg is reported."""
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    h.core.cancel(call_id, h.now)
    h.flush()
    h.advance(32)  # 64*T1 after the CANCEL: the leg ends as cancelled
    assert isinstance(h.terminal(call_id), LegCancelled)
    late = h.deliver(far.respond(invite, 487))
    assert [s.request.method for s in late] == ["ACK"]
    ack = late[0].request
    assert ack.via_branch == invite.via_branch
    assert ack.cseq == (1, "ACK") and ack.uri == invite.uri
    assert ack.to_tag == far.tag
    h.advance(1)
    assert [s.request.method for s in h.deliver(far.respond(invite, 487))] == ["ACK"]


def test_final_after_drop_is_still_acked_without_retransmitting_the_invite() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    assert h.core.drop(call_id)
    assert h.flush() == []  # drop sends nothing
    h.advance(2)
    assert len(h.sent_requests("INVITE")) == 1  # not even INVITE retransmissions
    late = h.deliver(far.respond(invite, 486))
    assert [s.request.method for s in late] == ["ACK"]


def test_2xx_after_drop_is_acked_and_byed() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    assert h.core.drop(call_id)
    late = h.deliver(far.answer(invite))
    assert [s.request.method for s in late] == ["ACK", "BYE"]


def test_late_final_is_forgotten_after_64_t1() -> None:
    h = Harness()
    far = FarEnd()
    call_id, invite = _ringing(h, far)
    h.core.cancel(call_id, h.now)
    h.advance(32)  # the leg ends
    h.advance(32)  # and the INVITE transaction lingers 64*T1 more, then it is gone
    assert h.deliver(far.respond(invite, 487)) == []
    assert h.core.stats.stray_responses == 1


def test_2xx_after_a_non_2xx_from_another_fork_is_acked_and_byed() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 486, tag="fork-a"))
    assert isinstance(h.terminal(call_id), LegFailed)
    late = h.deliver(far.answer(invite, tag="fork-b"))
    assert [s.request.method for s in late] == ["ACK", "BYE"]
    assert all(s.request.to_tag == "fork-b" for s in late)


# -- 3xx --------------------------------------------------------------------------------------


def test_3xx_reports_its_contact_targets() -> None:
    h = Harness(config=core_config(max_redirects=0))  # not followed: reported
    far = FarEnd()
    call_id = h.dial()
    h.deliver(
        far.respond(
            h.last("INVITE"),
            302,
            headers=[
                ("Contact", "<sip:+15550100@other.example>;q=0.5, <sip:alt@192.0.2.77:5070>"),
                ("Contact", '"Desk" <sip:desk@192.0.2.78>'),
            ],
        )
    )
    failed = h.terminal(call_id)
    assert isinstance(failed, LegFailed)
    assert failed.status_code == 302
    targets = "sip:+15550100@other.example, sip:alt@192.0.2.77:5070, sip:desk@192.0.2.78"
    assert failed.reason == f"Moved Temporarily; redirected to {targets}"
    assert failed.cdr.error == f"redirect not followed: {targets}"
    assert failed.cdr.disposition is Disposition.FAILED
    assert h.last("ACK").cseq == (1, "ACK")


def test_3xx_without_contact_says_so() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), 301))
    assert h.terminal(call_id).reason == "Moved Permanently; redirected to no Contact"


# -- digest: each request answers its own challenges with a fresh nonce count ------------------


def _auth(request: Request, header: str) -> tuple[str, int | None, str]:
    credentials = parse_authorization(request.header(header) or "")
    return credentials.nonce, credentials.nc, credentials.uri


def test_second_challenge_of_another_kind_reanswers_the_first_with_the_next_nc() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=CREDENTIALS)
    h.deliver(far.respond(h.last("INVITE"), 407, headers=[("Proxy-Authenticate", PROXY_CHALLENGE)]))
    second = h.last("INVITE")
    assert _auth(second, "proxy-authorization")[:2] == ("n-proxy", 1)
    h.deliver(far.respond(second, 401, headers=[("WWW-Authenticate", UAS_CHALLENGE)]))
    third = h.last("INVITE")
    assert third.cseq == (3, "INVITE")
    # Re-sending the same Proxy-Authorization (same nc, same cnonce) is a replay to a proxy.
    assert _auth(third, "proxy-authorization")[:2] == ("n-proxy", 2)
    assert _auth(third, "authorization")[:2] == ("n-uas", 1)
    h.deliver(far.answer(third))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    ack = h.last("ACK")  # §13.2.2.4: the ACK carries the INVITE's credentials as they were
    assert ack.header("proxy-authorization") == third.header("proxy-authorization")
    assert ack.header("authorization") == third.header("authorization")


def test_bye_challenged_by_the_proxy_that_challenged_the_invite_is_answered() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=CREDENTIALS)
    h.deliver(far.respond(h.last("INVITE"), 407, headers=[("Proxy-Authenticate", PROXY_CHALLENGE)]))
    invite = h.last("INVITE")
    h.deliver(far.answer(invite))
    assert h.core.confirm_answer(call_id, h.now)
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    # §22.3: credentials the proxy accepted go along pre-emptively, with the next nc.
    assert _auth(bye, "proxy-authorization") == ("n-proxy", 2, bye.uri)
    fresh = PROXY_CHALLENGE.replace("n-proxy", "n-proxy-2")
    h.deliver(far.respond(bye, 407, headers=[("Proxy-Authenticate", fresh + ", stale=true")]))
    retry = h.last("BYE")
    assert retry.cseq == (bye.cseq[0] + 1, "BYE")
    assert _auth(retry, "proxy-authorization") == ("n-proxy-2", 1, retry.uri)
    h.deliver(far.respond(retry, 200))
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded) and ended.cdr.error is None


def test_bye_challenge_after_an_invite_challenge_of_the_same_kind_is_answered() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=CREDENTIALS)
    h.deliver(far.respond(h.last("INVITE"), 401, headers=[("WWW-Authenticate", UAS_CHALLENGE)]))
    h.deliver(far.answer(h.last("INVITE")))
    assert h.core.confirm_answer(call_id, h.now)
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    other = UAS_CHALLENGE.replace("n-uas", "n-uas-bye")
    h.deliver(far.respond(bye, 401, headers=[("WWW-Authenticate", other)]))
    retry = h.last("BYE")
    assert _auth(retry, "authorization")[:2] == ("n-uas-bye", 1)
    h.deliver(far.respond(retry, 401, headers=[("WWW-Authenticate", other)]))
    ended = h.terminal(call_id)  # rejected twice: give up, but the leg still ends
    assert isinstance(ended, LegEnded)
    assert "401" in (ended.cdr.error or "")


def test_endless_stale_challenges_stop_after_a_few_tries() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=CREDENTIALS)
    for round_ in range(10):
        stale = UAS_CHALLENGE.replace("n-uas", f"n{round_}") + ", stale=true"
        if call_id not in {e.call_id for e in h.all_events if isinstance(e, LegFailed)}:
            h.deliver(far.respond(h.last("INVITE"), 401, headers=[("WWW-Authenticate", stale)]))
    assert isinstance(h.terminal(call_id), LegFailed)
    assert len(h.sent_requests("INVITE")) <= 5


def test_established_call_keeps_the_initial_invite_credentials_out_of_later_requests() -> None:
    """Without any challenge, in-dialog requests carry no credentials at all."""
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far, credentials=CREDENTIALS)
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    assert not bye.has_header("authorization") and not bye.has_header("proxy-authorization")


# -- responses a UAC must not take --------------------------------------------------------------


def test_response_with_more_than_one_via_is_discarded() -> None:
    """§8.1.3.3: a response carrying several Vias was misrouted to us; drop it."""
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    busy = far.respond(invite, 486)
    busy.add_header("Via", "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKelsewhere")
    assert h.deliver(busy) == []
    assert h.core.stats.rejected_messages == 1
    assert h.events_of(LegFailed) == []
    h.deliver(far.respond(invite, 486))
    assert isinstance(h.terminal(call_id), LegFailed)
