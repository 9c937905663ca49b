"""SIP/SIPS/tel URI parsing, escaping, rendering and helpers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.uri import SipUri, TelUri, parse_uri
from tests.uri_header_strategies import fuzz_text, mutated, sip_uris, tel_uris

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@example.com", SipUri(host="example.com", user="alice")),
        ("SIP:alice@Example.COM", SipUri(host="Example.COM", user="alice")),
        (
            "sips:bob@example.com:5071",
            SipUri(host="example.com", user="bob", scheme="sips", port=5071),
        ),
        ("sip:example.com", SipUri(host="example.com")),
        ("sip:+15551234567@10.0.0.1", SipUri(host="10.0.0.1", user="+15551234567")),
        ("sip:alice:secret@h", SipUri(host="h", user="alice", password="secret")),
        ("sip:alice:@h", SipUri(host="h", user="alice", password="")),
        ("sip:[2001:db8::1]:5070", SipUri(host="2001:db8::1", port=5070)),
        ("sip:u@[::1]", SipUri(host="::1", user="u")),
        ("sip:%61lice%20b@h", SipUri(host="h", user="alice b")),
        ("sip:j%C3%BCrgen@h", SipUri(host="h", user="jürgen")),
        # RFC 3261 user-unreserved characters, including ';' (telephone-subscriber params)
        (
            "sip:+1234;npdi;rn=+1999@h;user=phone",
            SipUri(host="h", user="+1234;npdi;rn=+1999", params=(("user", "phone"),)),
        ),
        ("sip:*67#555@h", SipUri(host="h", user="*67#555")),
        (
            "sip:h;lr;transport=TCP;maddr=[::1]",
            SipUri(host="h", params=(("lr", None), ("transport", "TCP"), ("maddr", "[::1]"))),
        ),
        ("sip:h;x=", SipUri(host="h", params=(("x", ""),))),
        ("sip:h;n%3Bx=v%3D1", SipUri(host="h", params=(("n;x", "v=1"),))),
        (
            "sip:b@h?Replaces=a%40b%3Bto-tag%3D1&Subject=hi%20there",
            SipUri(
                host="h", user="b", headers=(("Replaces", "a@b;to-tag=1"), ("Subject", "hi there"))
            ),
        ),
        ("sip:b@h?X=", SipUri(host="h", user="b", headers=(("X", ""),))),
        ("  sip:a@h  ", SipUri(host="h", user="a")),
        ("sip:a@host.example.com.", SipUri(host="host.example.com.", user="a")),
        ("tel:+1-201-555-0123", TelUri(number="+1-201-555-0123")),
        (
            "tel:7042;phone-context=example.com",
            TelUri(number="7042", params=(("phone-context", "example.com"),)),
        ),
        ("TEL:+44;ext=12;isub", TelUri(number="+44", params=(("ext", "12"), ("isub", None)))),
    ],
)
def test_parse_uri_table(text: str, expected: SipUri | TelUri) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    ("uri", "rendered"),
    [
        (SipUri(host="h", user="+15551234567"), "sip:+15551234567@h"),
        (SipUri(host="h", user="a b@c:d?e"), "sip:a%20b%40c%3Ad%3Fe@h"),
        (SipUri(host="h", user="jürgen"), "sip:j%C3%BCrgen@h"),
        (SipUri(host="h", user="u", password="p:w@"), "sip:u:p%3Aw%40@h"),
        (SipUri(host="2001:db8::1", port=5060, scheme="sips"), "sips:[2001:db8::1]:5060"),
        (SipUri(host="h", params=(("lr", None), ("a;b", "c=d"))), "sip:h;lr;a%3Bb=c%3Dd"),
        (SipUri(host="h", params=(("maddr", "[::1]"), ("x", "a&b"))), "sip:h;maddr=[::1];x=a&b"),
        (
            SipUri(host="h", user="b", headers=(("Replaces", "c@d;to-tag=1"), ("X", "a&b"))),
            "sip:b@h?Replaces=c%40d%3Bto-tag%3D1&X=a%26b",
        ),
        (TelUri(number="+1-555", params=(("ext", "1 2"),)), "tel:+1-555;ext=1%202"),
    ],
)
def test_render_escapes_each_component_by_its_own_rules(
    uri: SipUri | TelUri, rendered: str
) -> None:
    assert str(uri) == rendered
    assert uri.render() == rendered
    assert parse_uri(rendered) == uri


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "missing scheme"),
        ("alice@example.com", "missing scheme"),
        ("http://example.com", "unsupported scheme 'http'"),
        ("sip:", "missing host"),
        ("sip:@h", "empty user"),
        ("sip:a@", "missing host"),
        ("sip:a@h:", "bad port ''"),
        ("sip:a@h:abc", "bad port 'abc'"),
        ("sip:a@h:0", "port 0 out of range"),
        ("sip:a@h:65536", "port 65536 out of range"),
        ("sip:a@h:123456789012345678901234567890", "bad port"),
        ("sip:a@[2001:db8::1", "malformed host or port"),
        ("sip:a@[not:v6]", "invalid IPv6 address"),
        ("sip:a@2001:db8::1", "bad port"),
        ("sip:a b@h", "invalid character in user"),
        ("sip:a@h%20x", "invalid host"),
        ("sip:a@-bad", "invalid host"),
        ("sip:a%zz@h", "bad %-escape"),
        ("sip:a%ff@h", "not UTF-8"),
        ("sip:h;=v", "empty parameter name"),
        ("sip:h;a=b=c", "unescaped '='"),
        ("sip:h;a b", "invalid character in parameters"),
        ("sip:h?novalue", "is not name=value"),
        ("sip:h?a=b c", "invalid character in URI header"),
        ("tel:", "missing number"),
        ("tel:+", "invalid number"),
        ("tel:abc xyz", "invalid number"),
        ("tel:+1;a=b?x=y", "cannot carry ?headers"),
    ],
)
def test_parse_uri_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert fragment in str(caught.value)


def test_sip_uri_parse_rejects_tel() -> None:
    assert SipUri.parse("sips:a@h").is_secure
    with pytest.raises(SipParseError, match="expected a sip: or sips: URI"):
        SipUri.parse("tel:+1555")


def test_param_lookup_is_case_insensitive_and_tells_flags_from_absence() -> None:
    uri = SipUri.parse("sip:h;Transport=TCP;LR;x=")
    assert uri.param("transport") == "TCP"
    assert uri.param("lr") is None and uri.has_param("lr")
    assert uri.param("maddr") is None and not uri.has_param("maddr")
    assert uri.param("X") == ""


def test_with_param_replaces_in_place_or_appends() -> None:
    uri = SipUri.parse("sip:h;a=1;transport=udp;b")
    assert uri.with_param("TRANSPORT", "tcp").params == (
        ("a", "1"),
        ("TRANSPORT", "tcp"),
        ("b", None),
    )
    assert uri.with_param("lr").params[-1] == ("lr", None)
    assert uri.with_params(("a", "2"), ("c", "3")).params == (
        ("a", "2"),
        ("transport", "udp"),
        ("b", None),
        ("c", "3"),
    )
    assert uri.without_params("A", "b").params == (("transport", "udp"),)
    assert uri.params == (("a", "1"), ("transport", "udp"), ("b", None)), "original unchanged"


def test_headers_helpers() -> None:
    uri = SipUri.parse("sip:b@h;lr?Replaces=x%40y&subject=z")
    assert uri.header("replaces") == "x@y"
    assert uri.header("Other") is None
    assert uri.without_headers() == SipUri(host="h", user="b", params=(("lr", None),))
    assert str(uri.with_header("SUBJECT", "new")) == "sip:b@h;lr?Replaces=x%40y&SUBJECT=new"


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("sip:h", None, ("h", 5060)),
        ("sip:h:5080", None, ("h", 5080)),
        ("sips:h", None, ("h", 5061)),
        ("sip:h;transport=TLS", None, ("h", 5061)),
        ("sip:h;transport=tcp", None, ("h", 5060)),
        ("sip:h", 7000, ("h", 7000)),
        ("sip:[::1]", None, ("::1", 5060)),
    ],
)
def test_host_port(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert SipUri.parse(text).host_port(default) == expected


def test_replace_and_flags() -> None:
    uri = SipUri.parse("sip:+1555@[::1]")
    assert uri.is_ipv6 and not uri.is_secure
    secure = uri.replace(scheme="sips")
    assert secure.is_secure and str(secure) == "sips:+1555@[::1]"
    tel = parse_uri("tel:+1555")
    assert isinstance(tel, TelUri) and tel.is_global and tel.scheme == "tel"
    assert str(tel.with_param("ext", "9")) == "tel:+1555;ext=9"


@settings(max_examples=300, deadline=None)
@given(sip_uris())
def test_sip_uri_round_trip(uri: SipUri) -> None:
    assert parse_uri(uri.render()) == uri


@settings(max_examples=200, deadline=None)
@given(tel_uris)
def test_tel_uri_round_trip(uri: TelUri) -> None:
    assert parse_uri(uri.render()) == uri


@FUZZ
@given(st.one_of(fuzz_text, mutated(sip_uris().map(str)), mutated(tel_uris.map(str))))
def test_arbitrary_text_parses_or_raises_sip_parse_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SipParseError:
        return
    assert parse_uri(uri.render()) == uri
