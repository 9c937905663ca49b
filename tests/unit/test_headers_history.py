"""History-Info (RFC 7044) and Diversion (RFC 5806) render/parse, and comma-list splitting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.headers import (
    Diversion,
    HistoryInfoEntry,
    first_header_value,
    parse_diversion,
    parse_history_info,
    render_diversion,
    render_history_info,
    split_header_values,
)
from tests.uri_header_strategies import display_names, sip_uris, tokens


def test_history_info_embeds_the_reason_escaped_as_a_uri_header() -> None:
    entry = HistoryInfoEntry(
        uri="sip:+15551234@example.com;user=phone",
        index="1.1",
        display_name='Agent "7"',
        reason='SIP;cause=302;text="Moved Temporarily"',
        rc="1",
    )
    rendered = entry.render()
    assert rendered == (
        r'"Agent \"7\"" <sip:+15551234@example.com;user=phone'
        "?Reason=SIP%3Bcause%3D302%3Btext%3D%22Moved%20Temporarily%22>;index=1.1;rc=1"
    )
    assert str(entry) == rendered
    assert HistoryInfoEntry.parse(rendered) == entry


def test_history_info_parse_of_a_peer_value() -> None:
    value = (
        "<sip:alice@atlanta.example.com>;index=1, "
        "<sip:bob@biloxi.example.com?Reason=SIP%3Bcause%3D486&Priority=urgent>;index=1.1;mp=1;x=y, "
        "<tel:+15551234>;index=1.1.1;np=1.1"
    )
    entries = parse_history_info(value)
    assert entries == [
        HistoryInfoEntry(uri="sip:alice@atlanta.example.com", index="1"),
        HistoryInfoEntry(
            uri="sip:bob@biloxi.example.com?Priority=urgent",
            index="1.1",
            reason="SIP;cause=486",
            mp="1",
        ),
        HistoryInfoEntry(uri="tel:+15551234", index="1.1.1", np="1.1"),
    ]
    assert parse_history_info(render_history_info(entries)) == entries


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<sip:a@b>", "History-Info: entry without index parameter"),
        ("<sip:a@b>;index=1.x", "History-Info: index '1.x' is not an index like 1.2.1"),
        ("<sip:a@b>;index", "History-Info: index '' is not an index"),
        ("<sip:a@b>;index=1;rc=.1", "History-Info: rc '.1' is not an index"),
        ("<sip:a@b:0>;index=1", "History-Info: SIP URI: port 0 out of range"),
        ("<sip:a@b?Reason=%zz>;index=1", "bad %-escape"),
    ],
)
def test_history_info_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        HistoryInfoEntry.parse(text)
    assert fragment in str(caught.value)


def test_history_info_render_validates_our_own_values() -> None:
    with pytest.raises(SipParseError, match="index '1;evil' is not an index"):
        HistoryInfoEntry(uri="sip:a@b", index="1;evil").render()
    with pytest.raises(SipParseError, match="Reason can only be embedded in a sip/sips URI"):
        HistoryInfoEntry(uri="tel:+1", index="1", reason="SIP;cause=302").render()
    with pytest.raises(SipParseError, match="History-Info: URI 'nonsense'"):
        HistoryInfoEntry(uri="nonsense", index="1").render()
    with pytest.raises(SipParseError, match="History-Info: empty value"):
        parse_history_info("  ")


def test_diversion_render_and_parse() -> None:
    diversion = Diversion(
        uri="sip:+15550001@pbx.example.com",
        display_name="Front Desk",
        reason="user-busy",
        counter=2,
        limit=5,
        privacy="off",
        screen="no",
    )
    rendered = diversion.render()
    assert rendered == (
        '"Front Desk" <sip:+15550001@pbx.example.com>;reason=user-busy;counter=2;limit=5'
        ";privacy=off;screen=no"
    )
    assert Diversion.parse(rendered) == diversion
    assert Diversion(uri="sip:a@b").render() == "<sip:a@b>;reason=unknown"
    assert Diversion(uri="sip:a@b", reason="my reason").render() == '<sip:a@b>;reason="my reason"'


def test_diversion_parse_of_peer_values() -> None:
    values = parse_diversion(
        '<sip:a@b>;REASON="no-answer";counter=1;x-ext=1, "B, C" <tel:+1555>;privacy=full'
    )
    assert values == [
        Diversion(uri="sip:a@b", reason="no-answer", counter=1),
        Diversion(uri="tel:+1555", display_name="B, C", reason="", privacy="full"),
    ]
    assert parse_diversion(render_diversion(values)) == values


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<sip:a@b>;counter=100", "Diversion: counter '100' is not 0..99"),
        ("<sip:a@b>;limit=x", "Diversion: limit 'x' is not 0..99"),
        ("<sip:a@b>;reason", "Diversion: reason parameter without a value"),
        ('<sip:a@b>;reason="a\x00b"', "Diversion: control character in reason"),
        ("<sip:a@b", "Diversion: missing '>'"),
    ],
)
def test_diversion_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        Diversion.parse(text)
    assert fragment in str(caught.value)


def test_diversion_render_rejects_counter_out_of_range() -> None:
    with pytest.raises(SipParseError, match=r"counter 100 is not 0\.\.99"):
        Diversion(uri="sip:a@b", counter=100).render()


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("a", ["a"]),
        ("  a , b,c ", ["a", "b", "c"]),
        ('"x, y" <sip:a@b>, <sip:c@d;p=1,2>', ['"x, y" <sip:a@b>', "<sip:c@d;p=1,2>"]),
        (r'"q \", still quoted" <sip:a@b>, z', [r'"q \", still quoted" <sip:a@b>', "z"]),
        ("a,, ,b", ["a", "b"]),
        ("", []),
        (" , ", []),
    ],
)
def test_split_header_values(value: str, elements: list[str]) -> None:
    assert split_header_values(value) == elements
    assert first_header_value(value) == (elements[0] if elements else "")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [('a, "open', "unterminated quoted string"), ("a, <sip:x", "unclosed '<'")],
)
def test_split_header_values_errors(value: str, fragment: str) -> None:
    with pytest.raises(SipParseError, match=fragment):
        split_header_values(value)


index_values = st.from_regex(r"[1-9][0-9]?(?:\.[0-9]{1,2}){0,3}", fullmatch=True)
reason_texts = st.sampled_from(
    ["", 'SIP;cause=302;text="Moved"', "Q.850;cause=16", "SIP;cause=486"]
)
history_entries = st.builds(
    HistoryInfoEntry,
    uri=sip_uris().map(lambda uri: uri.without_headers().render()),
    index=index_values,
    display_name=display_names,
    reason=reason_texts,
    rc=st.just("") | index_values,
    mp=st.just("") | index_values,
    np=st.just("") | index_values,
)
diversions = st.builds(
    Diversion,
    uri=sip_uris().map(lambda uri: uri.render()),
    display_name=display_names,
    reason=st.just("") | tokens | display_names,
    counter=st.none() | st.integers(0, 99),
    limit=st.none() | st.integers(0, 99),
    privacy=st.just("") | tokens,
    screen=st.sampled_from(["", "yes", "no"]),
)


@settings(max_examples=200, deadline=None)
@given(history_entries)
def test_history_info_round_trip(entry: HistoryInfoEntry) -> None:
    assert HistoryInfoEntry.parse(entry.render()) == entry


@settings(max_examples=200, deadline=None)
@given(diversions)
def test_diversion_round_trip(diversion: Diversion) -> None:
    assert Diversion.parse(diversion.render()) == diversion
