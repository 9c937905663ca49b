"""RFC 3262 helpers (sipstack.prack): RSeq/RAck values and the in-order acceptance rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipstack.errors import RemoteProtocolError, SipParseError
from sipstack.message import Response
from sipstack.prack import (
    EarlyDialogRSeq,
    RAck,
    Reliability,
    ReliableProvisionals,
    is_reliable,
    parse_rseq,
    rack_for,
)

PRACK, DUP, GAP = Reliability.PRACK, Reliability.DUPLICATE, Reliability.OUT_OF_ORDER


def provisional(code: int = 183, *, require: str | None = "100rel", rseq: str | None = "7",
                cseq: str = "1 INVITE") -> Response:  # fmt: skip
    headers = [("To", "<sip:b@example.com>;tag=t1"), ("CSeq", cseq)]
    if require is not None:
        headers.append(("Require", require))
    if rseq is not None:
        headers.append(("RSeq", rseq))
    return Response(code, None, headers)


@pytest.mark.parametrize(("text", "value"), [("1", 1), (" 42 ", 42), ("4294967295", 2**32 - 1)])
def test_parse_rseq(text: str, value: int) -> None:
    assert parse_rseq(text) == value


@pytest.mark.parametrize("text", ["0", "", "-1", "4294967296", "12a", "99999999999"])
def test_bad_rseq_is_named(text: str) -> None:
    with pytest.raises(SipParseError, match="RSeq"):
        parse_rseq(text)


def test_rack_round_trip_and_errors() -> None:
    rack = RAck.parse("776656 1 INVITE")
    assert rack == RAck(776656, 1, "INVITE") and rack.render() == "776656 1 INVITE"
    for bad, message in [
        ("1 INVITE", "is not '<rseq> <cseq> <method>'"),
        ("0 1 INVITE", "RSeq"),
        ("1 x INVITE", "CSeq number"),
        ("1 1 INV@TE", "method"),
    ]:
        with pytest.raises(SipParseError, match=message):
            RAck.parse(bad)
    with pytest.raises(ValueError, match="method"):
        RAck(1, 1, "IN VITE")


@given(st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_rack_render_parse_round_trip(rseq: int, cseq: int) -> None:
    assert RAck.parse(RAck(rseq, cseq, "INVITE").render()) == RAck(rseq, cseq, "INVITE")


def test_rack_for_a_reliable_provisional() -> None:
    assert is_reliable(provisional(require="timer, 100REL"))
    assert rack_for(provisional(rseq="9", cseq="3 INVITE")) == RAck(9, 3, "INVITE")


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (provisional(require=None), "not a reliable provisional"),
        (provisional(require="timer"), "not a reliable provisional"),
        (provisional(100), "not a reliable provisional"),
        (provisional(200), "not a reliable provisional"),
        (provisional(rseq=None), "without an RSeq"),
        (provisional(rseq="zero"), "RSeq: 'zero'"),
    ],
)
def test_rack_for_rejects_what_cannot_be_acknowledged(response: Response, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        rack_for(response)


@pytest.mark.parametrize(
    ("rseqs", "decisions"),
    [
        ([5], [PRACK]),
        ([5, 6, 7], [PRACK, PRACK, PRACK]),
        ([5, 5, 6], [PRACK, DUP, PRACK]),  # a retransmission of 5
        ([5, 7, 6, 7], [PRACK, GAP, PRACK, PRACK]),  # 7 before 6: not acknowledged then
        ([5, 6, 4], [PRACK, PRACK, DUP]),
        ([2**31 - 1, 2**31], [PRACK, PRACK]),
    ],
)
def test_in_order_acceptance(rseqs: list[int], decisions: list[Reliability]) -> None:
    state = EarlyDialogRSeq()
    seen = []
    for rseq in rseqs:
        decision, state = state.accept(rseq)
        seen.append(decision)
    assert seen == decisions


@given(st.integers(1, 2**31 - 1), st.lists(st.integers(-3, 3), max_size=30))
def test_only_the_next_rseq_is_ever_acknowledged(first: int, steps: list[int]) -> None:
    state = EarlyDialogRSeq()
    decision, state = state.accept(first)
    assert decision is PRACK
    for step in steps:
        rseq = max(1, (state.last or 1) + step)
        before = state.last
        decision, state = state.accept(rseq)
        assert (decision is PRACK) == (before is not None and rseq == before + 1)
        assert state.last == (rseq if decision is PRACK else before)


def test_each_early_dialog_has_its_own_sequence() -> None:
    forks = ReliableProvisionals()
    assert forks.accept("a", 10) is PRACK
    assert forks.accept("b", 500) is PRACK  # another fork starts its own numbering
    assert forks.accept("a", 11) is PRACK
    assert forks.accept("b", 500) is DUP
    assert forks.accept("b", 502) is GAP
    assert (forks.last("a"), forks.last("b"), forks.last("c")) == (11, 500, None)
    forks.clear()
    assert forks.last("a") is None
    with pytest.raises(ValueError, match="To tag"):
        forks.accept("", 1)
    with pytest.raises(ValueError, match="RSeq 0"):
        forks.accept("a", 0)
