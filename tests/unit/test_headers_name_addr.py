"""NameAddr (From/To/Route/...), Contact, Refer-To and P-Asserted-Identity."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from sipstack.errors import SipParseError
from sipstack.headers import Contact, NameAddr, PAssertedIdentity, ReferTo
from sipstack.uri import SipUri, TelUri
from tests.uri_header_strategies import name_addrs

ALICE = SipUri(host="example.com", user="alice")


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ("<sip:alice@example.com>", "", ALICE, ()),
        ("sip:alice@example.com", "", ALICE, ()),
        ("sip:alice@example.com;tag=abc", "", ALICE, (("tag", "abc"),)),
        ('"Alice" <sip:alice@example.com>;tag=1', "Alice", ALICE, (("tag", "1"),)),
        ("Alice Smith <sip:alice@example.com>", "Alice Smith", ALICE, ()),
        ('"A <b>, c" <sip:alice@example.com>', "A <b>, c", ALICE, ()),
        (r'"say \"hi\" \\ bye" <sip:alice@example.com>', 'say "hi" \\ bye', ALICE, ()),
        ('"José Müller 李" <sip:alice@example.com>', "José Müller 李", ALICE, ()),
        ('""<sip:alice@example.com>', "", ALICE, ()),
        (
            '  "x"   <sip:alice@example.com>  ;  tag = t1 ; lr  ',
            "x",
            ALICE,
            (("tag", "t1"), ("lr", None)),
        ),
        (
            '<sip:alice@example.com>;+sip.instance="<urn:uuid:1>";expires=60',
            "",
            ALICE,
            (("+sip.instance", '"<urn:uuid:1>"'), ("expires", "60")),
        ),
        (
            "<sip:alice@example.com;transport=tcp>;tag=9",
            "",
            SipUri(host="example.com", user="alice", params=(("transport", "tcp"),)),
            (("tag", "9"),),
        ),
        ("<sip:[2001:db8::5]:5062>", "", SipUri(host="2001:db8::5", port=5062), ()),
        ("<sip:%2B1%20555@example.com>", "", SipUri(host="example.com", user="+1 555"), ()),
        ("<tel:+15551234>;tag=x", "", TelUri(number="+15551234"), (("tag", "x"),)),
        ("tel:+15551234;tag=x", "", TelUri(number="+15551234"), (("tag", "x"),)),
    ],
)
def test_parse_table(
    text: str, display: str, uri: SipUri | TelUri, params: tuple[tuple[str, str | None], ...]
) -> None:
    value = NameAddr.parse(text)
    assert (value.display_name, value.uri, value.params) == (display, uri, params)


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (NameAddr(ALICE), "<sip:alice@example.com>"),
        (NameAddr(ALICE, "Alice", (("tag", "1"),)), '"Alice" <sip:alice@example.com>;tag=1'),
        (NameAddr(ALICE, 'a "q" \\ <,>'), r'"a \"q\" \\ <,>" <sip:alice@example.com>'),
        (NameAddr(ALICE, "Zoë 東京"), '"Zoë 東京" <sip:alice@example.com>'),
        (NameAddr(ALICE, "evil\r\nX-Injected: 1"), '"evil  X-Injected: 1" <sip:alice@example.com>'),
        (
            NameAddr(SipUri(host="h", user="u", params=(("lr", None),)), "", (("x", None),)),
            "<sip:u@h;lr>;x",
        ),
    ],
)
def test_render_table(value: NameAddr, rendered: str) -> None:
    assert value.render() == rendered
    assert str(value) == rendered


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "From: empty value"),
        ('"unterminated <sip:a@b>', "unterminated or invalid quoted string"),
        ('"Alice" sip:a@b', "quoted display name must be followed by <URI>"),
        ("<sip:a@b", "missing '>'"),
        ('Al"ice <sip:a@b>', "invalid display name"),
        ("<sip:a@b> tag=1", "malformed parameter"),
        ("<sip:a@b>;=1", "malformed parameter"),
        ('<sip:a@b>;tag="open', "malformed parameter"),
        ("<http://x>", "From: URI 'http://x': unsupported scheme"),
        ("<sip:a@b:99999>", "From: SIP URI: port 99999 out of range"),
        ('"bell\x07" <sip:a@b>', "control character in display name"),
    ],
)
def test_parse_errors_name_the_header_and_the_fault(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        NameAddr.parse(text, "From")
    assert fragment in str(caught.value)


def test_tag_and_param_helpers() -> None:
    value = NameAddr.parse("<sip:a@b>;TAG=xyz;lr")
    assert value.tag == "xyz"
    assert value.has_param("LR") and value.param("lr") is None
    assert NameAddr(ALICE).tag is None
    assert NameAddr(ALICE).with_tag("t1").render() == "<sip:alice@example.com>;tag=t1"
    assert value.with_tag("new").params == (("tag", "new"), ("lr", None))
    assert value.without_params("tag").params == (("lr", None),)


def test_parse_all_respects_quotes_and_brackets() -> None:
    values = NameAddr.parse_all(
        '<sip:p1.example.com;lr>, "Smith, J" <sip:j@h>;tag=1,sip:x@y ,<sip:z@w?a=b%2Cc>'
    )
    assert [str(v.uri) for v in values] == [
        "sip:p1.example.com;lr",
        "sip:j@h",
        "sip:x@y",
        "sip:z@w?a=b%2Cc",
    ]
    assert values[1].display_name == "Smith, J"
    with pytest.raises(SipParseError, match="Route: empty value"):
        NameAddr.parse_all(" , ", "Route")
    with pytest.raises(SipParseError, match="Route: unclosed '<'"):
        NameAddr.parse_all("<sip:a@b>, <sip:c@d", "Route")


def test_contact_expires_q_and_wildcard() -> None:
    contacts = Contact.parse_all('<sip:a@b>;expires=3600;q=0.7, "x" <sip:c@d>')
    assert [c.expires for c in contacts] == [3600, None]
    assert contacts[0].q == 0.7 and contacts[1].q is None
    assert isinstance(contacts[0], Contact) and contacts[0].uri == SipUri(host="b", user="a")
    assert Contact.is_wildcard(" * ")
    with pytest.raises(SipParseError, match="wildcard"):
        Contact.parse("*")
    for bad, fragment in [
        ("<sip:a@b>;expires=soon", "Contact: expires 'soon' is not a number of seconds"),
        ("<sip:a@b>;expires=99999999999", "exceeds 2**32-1"),
        ("<sip:a@b>;expires", "expires parameter without a value"),
        ("<sip:a@b>;q=1.5", "q '1.5' is not a qvalue"),
    ]:
        with pytest.raises(SipParseError) as caught:
            Contact.parse(bad)
        assert fragment in str(caught.value)


def test_refer_to_keeps_embedded_replaces() -> None:
    text = "<sip:bob@example.com?Replaces=12345%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>"
    refer_to = ReferTo.parse(text)
    assert refer_to.replaces == "12345@host;to-tag=1;from-tag=2"
    assert refer_to.render() == text
    assert ReferTo.parse("<tel:+1555>").replaces is None
    with pytest.raises(SipParseError, match=r"^Refer-To: "):
        ReferTo.parse("<sip:a@b")


def test_p_asserted_identity() -> None:
    pai = PAssertedIdentity.parse('"Cust" <sip:+15551234@carrier.example>, <tel:+15551234>')
    assert pai.sip is not None and pai.sip.display_name == "Cust"
    assert pai.tel is not None and pai.tel.uri == TelUri(number="+15551234")
    assert pai.render() == '"Cust" <sip:+15551234@carrier.example>, <tel:+15551234>'
    assert PAssertedIdentity.parse("<sips:a@b>").tel is None
    for bad, fragment in [
        ("<sip:a@b>, <sips:c@d>", "two sip/sips identities"),
        ("<tel:+1>, <tel:+2>", "two tel identities"),
        ("<sip:a@b>, <tel:+1>, <tel:+2>", "3 identities"),
        ("", "no identity"),
        ("<mailto:a@b>", "unsupported scheme"),
    ]:
        with pytest.raises(SipParseError) as caught:
            PAssertedIdentity.parse(bad)
        assert fragment in str(caught.value)
        assert str(caught.value).startswith("P-Asserted-Identity")


@settings(max_examples=300, deadline=None)
@given(name_addrs)
def test_name_addr_round_trip(value: NameAddr) -> None:
    assert NameAddr.parse(value.render()) == value
