"""Dial targets: host:port parsing, transport precedence and Refer-To conversion."""

from __future__ import annotations

import pytest

from sipstack.dial import DialTarget
from sipstack.errors import SipParseError
from sipstack.target import (
    dial_target_from_refer_to,
    parse_hostport,
    resolve_transport,
    uri_transport,
)
from sipstack.transport import Transport
from sipstack.uri import SipUri


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("10.0.0.1:5080", 5060, ("10.0.0.1", 5080)),
        ("proxy.example.com", 5060, ("proxy.example.com", 5060)),
        ("proxy.example.com", 5061, ("proxy.example.com", 5061)),
        (" h:1 ", 5060, ("h", 1)),
        ("h:65535", 5060, ("h", 65535)),
        ("[2001:db8::1]:5070", 5060, ("2001:db8::1", 5070)),
        ("[2001:db8::1]", 5061, ("2001:db8::1", 5061)),
        ("2001:db8::1", 5060, ("2001:db8::1", 5060)),
    ],
)
def test_parse_hostport(text: str, default: int, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, default) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "address: empty host:port"),
        ("h:0", "port 0 out of range 1..65535"),
        ("h:65536", "port 65536 out of range 1..65535"),
        ("h:", "bad port ''"),
        ("h:http", "bad port 'http'"),
        (":5060", "missing host"),
        ("[2001:db8::1", "unclosed '['"),
        ("[2001:db8::1]5060", "unexpected text after ']'"),
        ("[not-v6]:5060", "invalid IPv6 address"),
        ("bad host:5060", "invalid host 'bad host'"),
        ("1:2:3", "invalid IPv6 address"),
    ],
)
def test_parse_hostport_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_hostport(text, 5060)
    assert fragment in str(caught.value)


def _target(uri: str, transport: Transport | None = None) -> DialTarget:
    return DialTarget(request_uri=uri, signaling_addr="proxy:5060", transport=transport)


@pytest.mark.parametrize(
    ("uri", "configured", "expected"),
    [
        ("sip:a@h", None, Transport.UDP),
        ("sip:a@h", Transport.TCP, Transport.TCP),
        ("sip:a@h;transport=tcp", Transport.UDP, Transport.TCP),
        ("sip:a@h;TRANSPORT=TLS", None, Transport.TLS),
        ("sip:a@h;transport=udp", Transport.TLS, Transport.UDP),
        ("sips:a@h", None, Transport.TLS),
        ("sips:a@h", Transport.UDP, Transport.TLS),
        ("sips:a@h;transport=tcp", None, Transport.TLS),  # RFC 5630: TLS over TCP
        ("tel:+15551234", Transport.TCP, Transport.TCP),
        ("tel:+15551234", None, Transport.UDP),
    ],
)
def test_resolve_transport_precedence(
    uri: str, configured: Transport | None, expected: Transport
) -> None:
    assert resolve_transport(_target(uri, configured)) is expected


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "request URI: empty"),
        ("sip:a@h;transport=sctp", "unsupported transport 'sctp'"),
        ("sip:a@h;transport", "transport parameter has no value"),
        ("sips:a@h;transport=udp", "a sips: URI cannot use transport=udp"),
        ("http://a", "unsupported scheme"),
    ],
)
def test_resolve_transport_errors(uri: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        resolve_transport(_target(uri))
    assert fragment in str(caught.value)


def test_uri_transport_is_none_when_the_uri_is_silent() -> None:
    assert uri_transport(SipUri(host="h")) is None
    assert uri_transport(SipUri(host="h", params=(("transport", "TCP"),))) is Transport.TCP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sip:1001@192.168.1.10",
            DialTarget(request_uri="sip:1001@192.168.1.10", signaling_addr="192.168.1.10:5060"),
        ),
        (
            "<sip:1001@192.168.1.10:5080>",
            DialTarget(
                request_uri="sip:1001@192.168.1.10:5080", signaling_addr="192.168.1.10:5080"
            ),
        ),
        (
            '"Agent 7" <sip:+15551234567@gw.example.com;user=phone>;x=1',
            DialTarget(
                request_uri="sip:+15551234567@gw.example.com;user=phone",
                signaling_addr="gw.example.com:5060",
            ),
        ),
        (
            "sips:agent@secure.example.com",
            DialTarget(
                request_uri="sips:agent@secure.example.com",
                signaling_addr="secure.example.com:5061",
                transport=Transport.TLS,
            ),
        ),
        (
            "sip:agent@h;transport=tls",
            DialTarget(
                request_uri="sip:agent@h;transport=tls",
                signaling_addr="h:5061",
                transport=Transport.TLS,
            ),
        ),
        (
            "<sip:agent@h:5090;transport=TCP?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
            DialTarget(
                request_uri="sip:agent@h:5090;transport=TCP",
                signaling_addr="h:5090",
                transport=Transport.TCP,
            ),
        ),
        (
            "sip:agent@[2001:db8::7]:5070",
            DialTarget(
                request_uri="sip:agent@[2001:db8::7]:5070", signaling_addr="[2001:db8::7]:5070"
            ),
        ),
        (
            "<sip:agent@[2001:db8::7]>",
            DialTarget(request_uri="sip:agent@[2001:db8::7]", signaling_addr="[2001:db8::7]:5060"),
        ),
        (
            "sip:agent@example.com;maddr=10.9.9.9",
            DialTarget(
                request_uri="sip:agent@example.com;maddr=10.9.9.9", signaling_addr="10.9.9.9:5060"
            ),
        ),
        (
            "sip:agent@h?Subject=hi",
            DialTarget(request_uri="sip:agent@h", signaling_addr="h:5060"),
        ),
    ],
)
def test_dial_target_from_refer_to(text: str, expected: DialTarget) -> None:
    assert dial_target_from_refer_to(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Refer-To: empty value"),
        ("   ", "Refer-To: empty value"),
        ("tel:+15551234", "Refer-To: non-SIP scheme 'tel'"),
        ("<tel:+15551234>", "Refer-To: non-SIP scheme 'tel'"),
        ("<mailto:a@b>", "Refer-To: URI 'mailto:a@b': unsupported scheme"),
        ("http://example.com/", "Refer-To: URI 'http://example.com/': unsupported scheme"),
        ("sip:example.com", "Refer-To: URI 'sip:example.com' has no user part"),
        ("sip:agent@", "Refer-To: SIP URI: missing host"),
        ("sip:agent@h:99999", "Refer-To: SIP URI: port 99999 out of range 1..65535"),
        ("sip:agent@h:65536", "port 65536 out of range"),
        ("sip:agent@h:abc", "Refer-To: SIP URI: bad port 'abc'"),
        ("<sip:agent@h", "Refer-To: missing '>'"),
        ("sip:agent@h;transport=sctp", "Refer-To: URI 'sip:agent@h;transport=sctp': unsupported"),
        ("sips:agent@h;transport=udp", "cannot use transport=udp"),
    ],
)
def test_dial_target_from_refer_to_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        dial_target_from_refer_to(text)
    assert fragment in str(caught.value)
