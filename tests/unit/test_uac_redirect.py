"""3xx following (RFC 3261 §8.1.3.4): a new INVITE to the best Contact not yet tried (q, then
order), new branch, CSeq + 1, same Call-ID and From tag, at most CoreConfig.max_redirects;
a Redirected event each time and the targets on the CDR; never after a 2xx."""

from __future__ import annotations

from sipstack.events import LegEnded, LegFailed, Redirected
from tests.fakes import FarEnd, Harness, core_config, establish


def _redirect(h: Harness, far: FarEnd, contacts: str, status: int = 302) -> None:
    h.deliver(far.respond(h.last("INVITE"), status, headers=[("Contact", contacts)]))


def test_a_302_is_followed_to_the_highest_q_contact_with_a_new_transaction() -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial(request_uri="sip:+15550001@192.0.2.10", signaling_addr="192.0.2.10:5060")
    first = h.last("INVITE")
    _redirect(h, far, "<sip:low@192.0.2.30>;q=0.2, <sip:best@192.0.2.20:5070>;q=0.9")
    [ack] = h.sent_requests("ACK")
    assert ack.request.cseq == (1, "ACK")
    second = h.last("INVITE")
    assert second is not first
    assert second.uri == "sip:best@192.0.2.20:5070"
    assert h.sent_requests("INVITE")[-1].out.address == ("192.0.2.20", 5070)
    assert second.cseq == (2, "INVITE") and second.call_id == first.call_id
    assert second.from_tag == first.from_tag and second.to_tag is None
    assert second.header("to") == first.header("to")  # §8.1.3.4: To unchanged
    assert second.header("via") != first.header("via")  # a new branch
    [event] = h.events_of(Redirected)
    assert event.target == "sip:best@192.0.2.20:5070" and event.status_code == 302
    assert event.state == "invited"
    there = ("192.0.2.20", 5070)
    h.deliver(far.respond(second, 180), source=there)
    h.deliver(far.answer(second), source=there)
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    assert h.core.is_established(call_id)
    h.core.bye(call_id, h.clock.now)
    h.flush()
    h.deliver(far.respond(h.last("BYE"), 200), source=there)
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.redirects == ("sip:best@192.0.2.20:5070",) == ended.redirects


def test_redirects_are_bounded_and_never_loop() -> None:
    h, far = Harness(config=core_config(max_redirects=2)), FarEnd()
    call_id = h.dial(request_uri="sip:a@192.0.2.10", signaling_addr="192.0.2.10:5060")
    _redirect(h, far, "<sip:b@192.0.2.11>")
    _redirect(h, far, "<sip:a@192.0.2.10>, <sip:b@192.0.2.11>, <sip:c@192.0.2.12>")
    assert h.last("INVITE").uri == "sip:c@192.0.2.12"  # a and b were tried: skipped
    _redirect(h, far, "<sip:d@192.0.2.13>")  # a third hop: over max_redirects
    failed = h.terminal(call_id)
    assert isinstance(failed, LegFailed) and failed.status_code == 302
    assert failed.cdr.redirects == ("sip:b@192.0.2.11", "sip:c@192.0.2.12")
    assert failed.cdr.error == "redirect not followed: sip:d@192.0.2.13"
    assert len(h.sent_requests("INVITE")) == 3 and len(h.events_of(Redirected)) == 2


def test_a_3xx_whose_contacts_were_all_tried_ends_the_leg() -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial(request_uri="sip:a@192.0.2.10", signaling_addr="192.0.2.10:5060")
    _redirect(h, far, "<sip:a@192.0.2.10>")
    assert isinstance(h.terminal(call_id), LegFailed)
    assert len(h.sent_requests("INVITE")) == 1 and h.events_of(Redirected) == []


def test_an_outbound_proxy_stays_the_first_hop() -> None:
    h, far = Harness(), FarEnd()
    h.dial(request_uri="sip:a@carrier.example", signaling_addr="192.0.2.10:5060")
    _redirect(h, far, "<sip:b@elsewhere.example>")
    sent = h.sent_requests("INVITE")[-1]
    assert sent.request.uri == "sip:b@elsewhere.example"
    assert sent.out.address == ("192.0.2.10", 5060)


def test_no_redirect_after_a_2xx() -> None:
    h, far = Harness(), FarEnd()
    call_id, invite = establish(h, far)
    h.deliver(far.respond(invite, 302, headers=[("Contact", "<sip:late@192.0.2.99>")]))
    assert h.core.is_established(call_id)
    assert len(h.sent_requests("INVITE")) == 1 and h.events_of(Redirected) == []
