"""Review findings on RFC 4028 session refreshes: re-INVITE fallback, glare, Min-SE, targets."""

from __future__ import annotations

from sipstack.events import LegEnded
from sipstack.message import Request, Response
from tests.fakes import ANSWER_SDP, FarEnd, Harness, core_config

ALLOW_WITHOUT_UPDATE = "INVITE, ACK, BYE, CANCEL, OPTIONS"


def _established(
    h: Harness, far: FarEnd, session_expires: str, *extra: tuple[str, str]
) -> tuple[str, Request, float]:
    call_id = h.dial()
    invite = h.last("INVITE")
    h.deliver(far.answer(invite, headers=[("Session-Expires", session_expires), *extra]))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    return call_id, invite, h.now


def _refreshes(h: Harness, since: float) -> list[tuple[str, float]]:
    """(method, time) of each refresh request we sent, retransmissions left out."""
    seen: set[str | None] = set()
    found: list[tuple[str, float]] = []
    for sent in h.wire:
        message = sent.message
        if not isinstance(message, Request) or message.to_tag is None:
            continue
        if message.method in ("UPDATE", "INVITE") and message.via_branch not in seen:
            seen.add(message.via_branch)
            found.append((message.method, round(sent.at - since, 6)))
    return found


def _reinvites(h: Harness) -> list[Request]:
    return [s.request for s in h.sent_requests("INVITE") if s.request.to_tag is not None]


def test_update_rejected_with_405_falls_back_to_a_reinvite_and_keeps_the_call() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, invite, start = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 405, headers=[("Allow", ALLOW_WITHOUT_UPDATE)]))
    [reinvite] = _reinvites(h)
    assert reinvite.uri == "sip:callee@192.0.2.10:5060"
    assert reinvite.cseq == (3, "INVITE")
    assert reinvite.to_tag == far.tag and reinvite.from_tag == invite.from_tag
    assert reinvite.header("session-expires") == "600;refresher=uac"
    assert reinvite.header("min-se") == "90"
    assert reinvite.header("supported") == "timer"
    assert reinvite.header("contact") == invite.header("contact")
    assert reinvite.header("content-type") == "application/sdp"
    # RFC 3264 §8: the session is unchanged, so is the SDP, o= version included.
    assert reinvite.body == invite.body
    ok = far.respond(
        reinvite,
        200,
        headers=[("Contact", far.contact), ("Session-Expires", "600;refresher=uac")],
        body=ANSWER_SDP,
    )
    [ack] = h.deliver(ok)
    assert ack.request.method == "ACK"
    assert ack.request.cseq == (3, "ACK")
    assert ack.request.via_branch != reinvite.via_branch  # a 2xx ACK is its own transaction
    assert ack.request.uri == reinvite.uri and ack.request.to_tag == far.tag
    [again] = h.deliver(ok)  # a retransmitted 2xx gets the same ACK
    assert again.out.data == ack.out.data
    h.advance(300)
    assert _refreshes(h, start) == [("UPDATE", 300), ("INVITE", 300), ("INVITE", 600)]
    assert h.core.is_established(call_id)


def test_peer_allow_without_update_means_reinvite_refreshes_from_the_start() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    _, _, start = _established(h, far, "600;refresher=uac", ("Allow", ALLOW_WITHOUT_UPDATE))
    h.advance(300)
    assert _refreshes(h, start) == [("INVITE", 300)]


def test_reinvite_refresh_not_implemented_either_keeps_the_call_without_refreshing() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, start = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 501))
    [reinvite] = _reinvites(h)
    h.deliver(far.respond(reinvite, 501))
    h.advance(3000)
    assert _refreshes(h, start) == [("UPDATE", 300), ("INVITE", 300)]
    assert h.core.is_established(call_id)


def test_non_2xx_to_our_reinvite_is_acked_with_its_branch_uri_and_routes() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd(record_route=("<sip:proxy.example;lr>",))
    _, _, _ = _established(h, far, "600;refresher=uac", ("Allow", ALLOW_WITHOUT_UPDATE))
    h.advance(300)
    [reinvite] = _reinvites(h)
    assert reinvite.headers_all("route") == ["<sip:proxy.example;lr>"]
    [ack] = h.deliver(far.respond(reinvite, 491))
    request = ack.request
    assert request.method == "ACK"
    assert request.via_branch == reinvite.via_branch  # §17.1.1.3: same transaction
    assert request.header("via") == reinvite.header("via")
    assert request.uri == reinvite.uri
    assert request.cseq == (reinvite.cseq[0], "ACK")
    assert request.headers_all("route") == reinvite.headers_all("route")
    assert request.header("to") == reinvite.header("to")


def test_glare_retry_waits_2_1_to_4_seconds_since_we_own_the_call_id() -> None:
    """§14.1: the owner of the Call-ID waits 2.1-4 s after a 491; the other side 0-2 s."""
    for seed in range(8):
        h = Harness(config=core_config(session_expires=600), seed=seed)
        far = FarEnd()
        _, _, start = _established(h, far, "600;refresher=uac")
        h.advance(300)
        h.deliver(far.respond(h.last("UPDATE"), 491))
        h.advance(10)
        times = [when for _, when in _refreshes(h, start)]
        assert len(times) == 2
        assert 2.1 <= times[1] - 300 <= 4.0


def test_update_2xx_contact_refreshes_the_remote_target() -> None:
    """§12.2.1.2: a 2xx to a target refresh request (UPDATE too) replaces the remote target."""
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, _ = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(
        far.respond(
            h.last("UPDATE"),
            200,
            headers=[("Contact", "<sip:callee@192.0.2.10:5099>"), ("Session-Expires", "600")],
        )
    )
    h.core.bye(call_id, h.now)
    h.flush()
    assert h.last("BYE").uri == "sip:callee@192.0.2.10:5099"
    assert h.sent_requests("BYE")[-1].out.address == ("192.0.2.10", 5099)


def test_min_se_from_a_422_is_carried_by_the_retry_and_later_refreshes() -> None:
    """RFC 4028 §7.4/§7.1: Min-SE is the largest value any 422 of the dialog asked for."""
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    _, _, start = _established(h, far, "600;refresher=uac")
    h.advance(300)
    h.deliver(far.respond(h.last("UPDATE"), 422, headers=[("Min-SE", "1000")]))
    retry = h.last("UPDATE")
    assert retry.header("session-expires") == "1000;refresher=uac"
    assert retry.header("min-se") == "1000"
    h.deliver(far.respond(retry, 200, headers=[("Session-Expires", "1000;refresher=uac")]))
    h.advance(500)
    later = h.last("UPDATE")
    assert _refreshes(h, start)[-1] == ("UPDATE", 800)
    assert later.header("min-se") == "1000"


def test_min_se_from_a_422_to_the_invite_is_kept_for_refreshes() -> None:
    h = Harness(config=core_config(session_expires=90))
    far = FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), 422, headers=[("Min-SE", "300")]))
    retry = h.last("INVITE")
    assert retry.header("min-se") == "300"
    h.deliver(far.answer(retry, headers=[("Session-Expires", "300;refresher=uac")]))
    assert h.core.confirm_answer(call_id, h.now)
    h.advance(150)
    assert h.last("UPDATE").header("min-se") == "300"


def test_peer_refresh_without_session_expires_makes_us_the_refresher() -> None:
    """RFC 4028 §9: a refresh without Session-Expires would switch the timer off; we keep
    policing the session by refreshing it ourselves and say so in the 2xx, rather than BYE
    a healthy call at the old expiry."""
    h = Harness()
    far = FarEnd()
    call_id, invite, _ = _established(h, far, "120;refresher=uas")
    h.advance(60)
    h.deliver(far.request("UPDATE", invite, headers=[("Supported", "timer")]))
    at = h.now
    ok = [r for r in h.sent_responses() if r.cseq[1] == "UPDATE"][-1]
    assert ok.status_code == 200
    assert ok.header("session-expires") == "120;refresher=uas"
    assert not ok.has_header("require")
    h.advance(60)
    ours = h.last("UPDATE")
    assert ours.header("session-expires") == "120;refresher=uac"
    h.deliver(far.respond(ours, 200, headers=[("Session-Expires", "120;refresher=uac")]))
    h.advance(55)  # past the old watchdog (60 + 120 - 32 = 148), before the next refresh
    assert h.sent_requests("BYE") == []
    assert _refreshes(h, at) == [("UPDATE", 60)]
    assert h.core.is_established(call_id)


def test_peer_reinvite_while_our_reinvite_refresh_is_pending_gets_491() -> None:
    """§14.2: a UA with its own re-INVITE pending answers a re-INVITE with 491."""
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    _, invite, _ = _established(h, far, "600;refresher=uac", ("Allow", ALLOW_WITHOUT_UPDATE))
    h.advance(300)
    assert len(_reinvites(h)) == 1
    h.deliver(far.request("INVITE", invite, body=ANSWER_SDP))
    answered: Response = [r for r in h.sent_responses() if r.cseq[1] == "INVITE"][-1]
    assert answered.status_code == 491
    # And an UPDATE carrying an offer would cross our pending offer just the same.
    h.deliver(
        far.request(
            "UPDATE", invite, headers=[("Content-Type", "application/sdp")], body=ANSWER_SDP
        )
    )
    answered = [r for r in h.sent_responses() if r.cseq[1] == "UPDATE"][-1]
    assert answered.status_code == 491


def test_2xx_to_our_reinvite_crossing_our_bye_is_acked_with_the_reinvite_cseq() -> None:
    h = Harness(config=core_config(session_expires=600))
    far = FarEnd()
    call_id, _, _ = _established(h, far, "600;refresher=uac", ("Allow", ALLOW_WITHOUT_UPDATE))
    h.advance(300)
    [reinvite] = _reinvites(h)
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    sent = h.deliver(far.respond(reinvite, 200, headers=[("Contact", far.contact)]))
    assert [s.request.method for s in sent] == ["ACK"]
    assert sent[0].request.cseq == (reinvite.cseq[0], "ACK")
    h.deliver(far.respond(bye, 200))
    assert isinstance(h.terminal(call_id), LegEnded)
    late = h.deliver(far.respond(reinvite, 200, headers=[("Contact", far.contact)]))
    assert [s.request.cseq for s in late][:1] == [(reinvite.cseq[0], "ACK")]


def test_challenged_refresh_is_answered_and_later_refreshes_count_nc_up() -> None:
    """RFC 7616 §3.4: every request answering the same nonce carries the next nc; re-sending
    one Authorization value unchanged is a replay a careful server refuses."""
    from sipstack.auth import parse_authorization
    from tests.fakes import CREDENTIALS

    h = Harness(config=core_config(session_expires=600))
    far = FarEnd(record_route=("<sip:proxy.example>",))  # a strict router: URI != target
    call_id = h.dial(credentials=CREDENTIALS)
    invite = h.last("INVITE")
    h.deliver(far.answer(invite, headers=[("Session-Expires", "600;refresher=uac")]))
    assert h.core.confirm_answer(call_id, h.now)
    h.advance(300)
    first = h.last("UPDATE")
    challenge = 'Digest realm="carrier", nonce="u1", qop="auth"'
    h.deliver(far.respond(first, 401, headers=[("WWW-Authenticate", challenge)]))
    retry = h.last("UPDATE")
    answered = parse_authorization(retry.header("authorization") or "")
    assert (answered.nonce, answered.nc, answered.uri) == ("u1", 1, retry.uri)
    assert retry.uri == "sip:proxy.example"
    h.deliver(far.respond(retry, 200, headers=[("Session-Expires", "600;refresher=uac")]))
    h.advance(300)
    later = parse_authorization(h.last("UPDATE").header("authorization") or "")
    assert (later.nonce, later.nc) == ("u1", 2)
    assert later.cnonce != answered.cnonce or later.response != answered.response


def test_our_200_to_a_refresh_naming_us_the_refresher_requires_timer() -> None:
    """RFC 4028 §9: the 2xx to a refresh of a UAC that supports timer carries Require: timer,
    whoever refreshes (here `refresher=uas`: us)."""
    h = Harness()
    far = FarEnd()
    _, invite, _ = _established(h, far, "600;refresher=uac")
    update = far.request(
        "UPDATE",
        invite,
        headers=[("Session-Expires", "600;refresher=uas"), ("Supported", "timer")],
    )
    h.deliver(update)
    ok = [r for r in h.sent_responses() if r.cseq[1] == "UPDATE"][-1]
    assert ok.status_code == 200
    assert ok.header("session-expires") == "600;refresher=uas"
    assert ok.header("require") == "timer"
