"""RFC 3326 Reason: parsing every value, rendering, the hangup class and our own reasons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.cdr import HangupReason
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.reason import (
    SESSION_TIMER_SIP_REASON,
    LocalHangup,
    ReasonValue,
    classify_reason,
    parse_reason_header,
    primary_reason,
    reason_for_local_hangup,
    render_reason_header,
)

Q850 = "Q.850"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Q.850;cause=16", [ReasonValue(Q850, 16, None)]),
        (
            'SIP;cause=200;text="Call completed elsewhere"',
            [ReasonValue("SIP", 200, "Call completed elsewhere")],
        ),
        # several values in one header, each protocol once (RFC 3326 §2)
        (
            'SIP;cause=487;text="Request Terminated", Q.850;cause=31;text="Normal, unspecified"',
            [
                ReasonValue("SIP", 487, "Request Terminated"),
                ReasonValue(Q850, 31, "Normal, unspecified"),
            ],
        ),
        # quoted text holding ';', ',' and escaped quotes and backslashes
        (
            r'Q.850;cause=21;text="rejected; by \"user\", see \\ note"',
            [ReasonValue(Q850, 21, 'rejected; by "user", see \\ note')],
        ),
        # spacing around ';', '=' and ',' and case of names
        (
            '  q.850 ; CAUSE = 17 ; Text = "Busy"  ,sip;cause=486  ',
            [ReasonValue(Q850, 17, "Busy"), ReasonValue("SIP", 486, None)],
        ),
        # empty list elements are tolerated
        (",, SIP;cause=408 ,,", [ReasonValue("SIP", 408, None)]),
        # other protocols and unknown parameters are kept / ignored, not fatal
        (
            'X-Vendor;cause=7;location=LN;flag, preemption;cause=1;text="x"',
            [ReasonValue("X-Vendor", 7, None), ReasonValue("preemption", 1, "x")],
        ),
        # a protocol with no cause, an unquoted text and a cause with leading zeros
        ("Q.850", [ReasonValue(Q850, None, None)]),
        ("SIP;text=Busy;cause=0486", [ReasonValue("SIP", 486, "Busy")]),
        # unknown parameters may carry values wider than a token
        ("Q.850;cause=16;x-host=[2001:db8::1]", [ReasonValue(Q850, 16, None)]),
        ('SIP;cause=200;text=""', [ReasonValue("SIP", 200, "")]),
    ],
)
def test_parse_reason_header(header: str, expected: list[ReasonValue]) -> None:
    assert parse_reason_header(header) == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "empty"),
        (" , ,", "empty"),
        ("Q.850;cause=abc", "cause 'abc' is not a number"),
        ("Q.850;cause=", "expected a parameter value"),
        ("Q.850;cause", "cause has no value"),
        ("Q.850;cause=-1", "is not a number"),
        ("Q.850;cause=\u0661\u0666", "is not a number"),  # Arabic-Indic digits
        ("Q.850;cause=\u00b2", "is not a number"),  # superscript two: isdigit() but not int()
        ("Q.850;cause=" + "9" * 5000, "too long"),
        ("Q.850;cause=16;cause=17", "cause twice"),
        ('Q.850;text="a";text="b"', "text twice"),
        ('Q.850;cause=16;text="unterminated', "quoted string"),
        ("Q.850 SIP", "expected ','"),
        ("Q.850;", "expected a parameter"),
        ('"quoted";cause=1', "expected a protocol token"),
        ("SIP;cause=200\r\nX-Injected: 1", "line break"),
    ],
)
def test_malformed_reason_raises_parse_error(header: str, message: str) -> None:
    with pytest.raises(SipParseError, match="Reason") as raised:
        parse_reason_header(header)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (
            ReasonValue(Q850, 16, "Normal call clearing"),
            'Q.850;cause=16;text="Normal call clearing"',
        ),
        (ReasonValue("SIP", 408, None), "SIP;cause=408"),
        (ReasonValue("SIP", None, None), "SIP"),
        (ReasonValue("X-Foo", None, 'say "hi" \\'), r'X-Foo;text="say \"hi\" \\"'),
    ],
)
def test_render(value: ReasonValue, rendered: str) -> None:
    assert value.render() == rendered


def test_render_header_joins_values() -> None:
    values = [ReasonValue("SIP", 408, None), ReasonValue(Q850, 102, "timer")]
    assert render_reason_header(values) == 'SIP;cause=408, Q.850;cause=102;text="timer"'


def test_known_protocols_take_their_canonical_case() -> None:
    assert ReasonValue("q.850", 16).protocol == Q850
    assert ReasonValue("sip", 200).protocol == "SIP"
    assert ReasonValue("x-Vendor", 1).protocol == "x-Vendor"


@pytest.mark.parametrize("protocol", ["", "SIP\r\nX: y", "Q 850", '"SIP"'])
def test_value_rejects_protocol_that_is_not_a_token(protocol: str) -> None:
    with pytest.raises(LocalProtocolError, match="not a token"):
        ReasonValue(protocol, 16)


def test_value_rejects_negative_cause() -> None:
    with pytest.raises(LocalProtocolError, match="out of range"):
        ReasonValue("SIP", -1)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], HangupReason.NORMAL),
        *[([ReasonValue(Q850, cause)], HangupReason.NORMAL) for cause in (16, 17, 18, 19)],
        ([ReasonValue(Q850, 21)], HangupReason.USER_HANGUP),
        ([ReasonValue(Q850, 102)], HangupReason.TIMER_EXPIRED),
        *[([ReasonValue(Q850, cause)], HangupReason.ERROR) for cause in (34, 38, 41, 42, 47)],
        *[([ReasonValue(Q850, cause)], HangupReason.NORMAL) for cause in (1, 20, 31, 127)],
        ([ReasonValue(Q850, None)], HangupReason.NORMAL),
        ([ReasonValue("SIP", 200)], HangupReason.NORMAL),
        ([ReasonValue("SIP", 408)], HangupReason.TIMER_EXPIRED),
        *[([ReasonValue("SIP", code)], HangupReason.ERROR) for code in (400, 480, 487, 503, 603)],
        *[([ReasonValue("SIP", code)], HangupReason.NORMAL) for code in (100, 183, 202, 302)],
        ([ReasonValue("SIP", None)], HangupReason.NORMAL),
        ([ReasonValue("X-Vendor", 34)], HangupReason.NORMAL),
        # Q.850 wins over SIP whichever comes first
        ([ReasonValue("SIP", 503), ReasonValue(Q850, 16)], HangupReason.NORMAL),
        ([ReasonValue(Q850, 34), ReasonValue("SIP", 200)], HangupReason.ERROR),
        # a SIP value with a cause beats a Q.850 value without one
        ([ReasonValue(Q850, None), ReasonValue("SIP", 408)], HangupReason.TIMER_EXPIRED),
        ([ReasonValue("X-Vendor", 1), ReasonValue("SIP", 500)], HangupReason.ERROR),
    ],
)
def test_classify_reason(values: list[ReasonValue], expected: HangupReason) -> None:
    assert classify_reason(values) is expected


def test_classify_parsed_header() -> None:
    header = 'SIP;cause=200;text="ok", Q.850;cause=102;text="Recovery on timer expiry"'
    assert classify_reason(parse_reason_header(header)) is HangupReason.TIMER_EXPIRED


def test_primary_reason_is_the_value_the_class_came_from() -> None:
    sip = ReasonValue("SIP", 487, "Request Terminated")
    q850 = ReasonValue(Q850, 21, "Call rejected")
    assert primary_reason([sip, q850]) is q850
    assert primary_reason([sip]) is sip
    vendor = ReasonValue("X-Vendor", 9)
    assert primary_reason([vendor, ReasonValue("Other", 1)]) is vendor
    assert primary_reason([]) is None


@pytest.mark.parametrize(
    ("kind", "protocol", "cause", "hangup_class"),
    [
        (LocalHangup.NORMAL, Q850, 16, HangupReason.NORMAL),
        (LocalHangup.RING_TIMEOUT, Q850, 19, HangupReason.NORMAL),
        (LocalHangup.MAX_DURATION, Q850, 16, HangupReason.NORMAL),
        (LocalHangup.SESSION_TIMER_EXPIRED, Q850, 102, HangupReason.TIMER_EXPIRED),
        (LocalHangup.ERROR, Q850, 31, HangupReason.NORMAL),
    ],
)
def test_reason_for_local_hangup(
    kind: LocalHangup, protocol: str, cause: int, hangup_class: HangupReason
) -> None:
    value = reason_for_local_hangup(kind)
    assert (value.protocol, value.cause) == (protocol, cause)
    assert value.text
    assert parse_reason_header(value.render()) == [value]
    assert classify_reason([value]) is hangup_class


def test_every_local_hangup_kind_has_a_reason() -> None:
    assert {reason_for_local_hangup(kind).cause for kind in LocalHangup} == {16, 19, 102, 31}


def test_session_timer_sip_reason_classifies_as_timer_expired() -> None:
    assert SESSION_TIMER_SIP_REASON.cause == 408
    assert classify_reason([SESSION_TIMER_SIP_REASON]) is HangupReason.TIMER_EXPIRED


# --- properties -------------------------------------------------------------------------------

_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
protocols = st.one_of(
    st.sampled_from(["SIP", Q850, "sip", "q.850", "preemption"]),
    st.text(_TOKEN_ALPHABET, min_size=1, max_size=12),
)
# quote() turns controls into spaces (they are never valid on the wire), so keep them out
texts = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
reason_values = st.builds(
    ReasonValue,
    protocol=protocols,
    cause=st.none() | st.integers(min_value=0, max_value=999_999_999),
    text=st.none() | texts,
)


@given(st.lists(reason_values, min_size=1, max_size=4))
def test_parse_of_render_round_trips(values: list[ReasonValue]) -> None:
    assert parse_reason_header(render_reason_header(values)) == values


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_parse_error(header: str) -> None:
    try:
        values = parse_reason_header(header)
    except SipParseError:
        return
    assert values
    classify_reason(values)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(["Q.850", ";", "cause", "=", "16", '"', "\\", ",", " ", "x"]), max_size=20
    )
)
def test_reason_shaped_noise_parses_or_raises_parse_error(pieces: list[str]) -> None:
    try:
        values = parse_reason_header("".join(pieces))
    except SipParseError:
        return
    assert parse_reason_header(render_reason_header(values)) == values
