"""RFC 3262 §4 around the PRACK itself: a 421 requiring 100rel gets one new INVITE with
Supported and Require: 100rel on the same leg (counted, reported as InviteRetried), whose
reliable 1xx are then PRACKed; CoreConfig.require_100rel sends Require from the start; the
first 1xx with SDP of each early dialog is reported once as EarlyMediaReceived."""

from __future__ import annotations

from sipstack.events import (
    EarlyMediaReceived,
    InviteRetried,
    LegFailed,
    ProvisionalReceived,
)
from tests.fakes import ANSWER_SDP, FarEnd, Harness, core_config

NEEDS_100REL = [("Require", "100rel")]


def reliable(rseq: int) -> list[tuple[str, str]]:
    return [("Require", "100rel"), ("RSeq", str(rseq)), ("Contact", "<sip:callee@192.0.2.10>")]


def test_a_421_for_100rel_is_retried_once_with_it_and_its_183_is_pracked() -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial()
    first = h.last("INVITE")
    assert first.header("require") is None and "100rel" not in (first.header("supported") or "")
    h.deliver(far.respond(first, 421, headers=NEEDS_100REL))
    [ack] = h.sent_requests("ACK")  # the 421's ACK (the failed transaction's)
    assert ack.request.cseq == (1, "ACK")
    second = h.last("INVITE")
    assert second.cseq == (2, "INVITE") and second.call_id == first.call_id
    assert second.via_branch != first.via_branch  # a new transaction
    assert second.header("require") == "100rel"
    assert second.header("supported") == "timer, 100rel"
    assert h.core.stats.retries_421 == 1
    [retried] = h.events_of(InviteRetried)
    assert (retried.status_code, retried.extension, retried.state) == (421, "100rel", "invited")
    progress = far.respond(second, 183, headers=reliable(1), body=ANSWER_SDP)
    h.deliver(progress)
    [prack] = h.sent_requests("PRACK")
    assert prack.request.header("rack") == "1 2 INVITE"
    h.deliver(progress)  # a retransmission: no second PRACK, no second event
    assert len(h.sent_requests("PRACK")) == 1
    [early] = h.events_of(EarlyMediaReceived)
    assert early.reliable and early.to_tag == far.tag and early.status_code == 183
    h.deliver(far.respond(prack.request, 200))
    h.deliver(far.answer(second))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    assert h.last("ACK").cseq == (2, "ACK")


def test_a_second_421_fails_the_leg() -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial()
    h.deliver(far.respond(h.last("INVITE"), 421, headers=NEEDS_100REL))
    h.deliver(far.respond(h.last("INVITE"), 421, headers=NEEDS_100REL))
    assert len(h.sent_requests("INVITE")) == 2
    terminal = h.terminal(call_id)
    assert isinstance(terminal, LegFailed) and terminal.final_status_code == 421


def test_a_421_for_another_extension_or_with_retry_off_fails_at_once() -> None:
    for config, headers in (
        (core_config(), [("Require", "foo")]),
        (core_config(retry_421=False), NEEDS_100REL),
    ):
        h, far = Harness(config=config), FarEnd()
        call_id = h.dial()
        h.deliver(far.respond(h.last("INVITE"), 421, headers=headers))
        assert len(h.sent_requests("INVITE")) == 1
        assert h.terminal(call_id).final_status_code == 421
        assert h.core.stats.retries_421 == 0


def test_require_100rel_is_in_the_first_invite() -> None:
    h = Harness(config=core_config(require_100rel=True))
    h.dial()
    invite = h.last("INVITE")
    assert invite.header("require") == "100rel"
    assert invite.header("supported") == "timer, 100rel"


def test_early_media_once_per_early_dialog() -> None:
    h, far = Harness(), FarEnd()
    h.dial()
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180))
    h.deliver(far.respond(invite, 183, body=ANSWER_SDP))
    h.deliver(far.respond(invite, 183, body=ANSWER_SDP))  # same dialog: not again
    h.deliver(far.respond(invite, 183, body=ANSWER_SDP, tag="fork-2"))
    assert [e.to_tag for e in h.events_of(EarlyMediaReceived)] == [far.tag, "fork-2"]
    assert not any(e.reliable for e in h.events_of(EarlyMediaReceived))
    assert len(h.events_of(ProvisionalReceived)) == 4  # every 1xx is still reported
