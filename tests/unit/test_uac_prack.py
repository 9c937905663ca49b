"""RFC 3262 (100rel) when CoreConfig.prack: the INVITE says Supported: 100rel; a reliable 1xx
(Require: 100rel, RSeq) gets a PRACK with its RAck in the early dialog, a non-INVITE
transaction; a retransmitted one is not PRACKed again; the confirmed dialog's CSeq goes on
after the PRACK's."""

from __future__ import annotations

from sipstack.events import ProvisionalReceived
from tests.fakes import FarEnd, Harness, core_config

RELIABLE = [("Require", "100rel"), ("RSeq", "7"), ("Contact", "<sip:callee@192.0.2.10:5060>")]


def test_without_prack_nothing_changes() -> None:
    h = Harness()
    h.dial()
    assert h.last("INVITE").header("supported") == "timer"


def test_a_reliable_183_is_pracked_once_and_the_dialog_cseq_goes_on() -> None:
    h, far = Harness(config=core_config(prack=True)), FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    assert invite.header("supported") == "timer, 100rel"
    ringing = far.respond(invite, 183, headers=RELIABLE)
    h.deliver(ringing)
    [prack] = h.sent_requests("PRACK")
    assert prack.request.header("rack") == "7 1 INVITE"
    assert prack.request.cseq == (2, "PRACK") and prack.request.to_tag == far.tag
    assert prack.request.call_id == invite.call_id
    assert prack.request.uri == "sip:callee@192.0.2.10:5060"  # the 1xx's Contact
    h.deliver(ringing)  # a retransmission: not PRACKed again, not reported again
    assert len(h.sent_requests("PRACK")) == 1
    assert len(h.events_of(ProvisionalReceived)) == 1
    h.deliver(far.respond(prack.request, 200))
    h.deliver(far.answer(invite))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    h.core.bye(call_id, h.clock.now)
    h.flush()
    assert h.last("BYE").cseq == (3, "BYE")
