"""Via: sent-protocol, sent-by (IPv6 too), branch/rport/received/maddr/ttl, comma lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from sipstack.errors import SipParseError
from sipstack.headers import Via
from sipstack.transport import Transport
from tests.uri_header_strategies import vias


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport",
            Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bK776asdhds"), ("rport", None))),
        ),
        (
            "sip / 2.0 / tcp  host.example.com ; branch = z9hG4bKx ;received=192.0.2.4",
            Via(
                "TCP", "host.example.com", None, (("branch", "z9hG4bKx"), ("received", "192.0.2.4"))
            ),
        ),
        (
            "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bK1;received=2001:db8::10;rport=40000",
            Via(
                "TLS",
                "2001:db8::9",
                5061,
                (("branch", "z9hG4bK1"), ("received", "2001:db8::10"), ("rport", "40000")),
            ),
        ),
        (
            'SIP/2.0/UDP h;maddr=224.0.0.1;ttl=16;x-ext="a;b"',
            Via("UDP", "h", None, (("maddr", "224.0.0.1"), ("ttl", "16"), ("x-ext", '"a;b"'))),
        ),
        ("SIP/2.0/WS df7jal23ls0d.invalid", Via("WS", "df7jal23ls0d.invalid")),
    ],
)
def test_parse_table(text: str, expected: Via) -> None:
    assert Via.parse(text) == expected


def test_properties() -> None:
    via = Via.parse("SIP/2.0/UDP h:5070;branch=z9hG4bKabc;rport=5999;received=1.2.3.4;ttl=3")
    assert via.branch == "z9hG4bKabc"
    assert via.has_rport and via.rport == 5999
    assert via.received == "1.2.3.4"
    assert via.ttl == 3 and via.maddr is None
    assert via.sent_by == ("h", 5070)
    flag = Via.parse("SIP/2.0/TLS [::1];branch=z9hG4bK1;rport")
    assert flag.has_rport and flag.rport is None
    assert flag.sent_by == ("::1", 5061)
    bare = Via.parse("SIP/2.0/TCP h")
    assert not bare.has_rport and bare.branch is None and bare.sent_by == ("h", 5060)


def test_build_and_render() -> None:
    via = Via.build(Transport.TLS, "2001:db8::1", 5061, "z9hG4bKq1")
    assert via.render() == "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKq1;rport"
    assert str(Via.build(Transport.UDP, "h", None, "z9hG4bK2", rport=False)) == (
        "SIP/2.0/UDP h;branch=z9hG4bK2"
    )
    assert via.with_param("received", "::2").render().endswith(";rport;received=::2")


def test_parse_all_and_first() -> None:
    value = 'SIP/2.0/UDP p1;branch=z9hG4bKa;x="q,r", SIP/2.0/TCP [::1]:5070;branch=z9hG4bKb'
    hops = Via.parse_all(value)
    assert [(h.transport, h.host, h.branch) for h in hops] == [
        ("UDP", "p1", "z9hG4bKa"),
        ("TCP", "::1", "z9hG4bKb"),
    ]
    assert Via.parse_first(value) == hops[0]
    assert Via.parse_first("SIP/2.0/UDP a;branch=z9hG4bK1, garbage").branch == "z9hG4bK1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected 'SIP/2.0/<transport> host[:port]'"),
        ("SIP/3.0/UDP h", "expected 'SIP/2.0/<transport>"),
        ("SIP/2.0/UDP", "expected 'SIP/2.0/<transport>"),
        ("SIP/2.0/UDP h:99999", "Via: port 99999 out of range"),
        ("SIP/2.0/UDP h:x", "Via: bad port 'x'"),
        ("SIP/2.0/UDP [::1", "expected 'SIP/2.0/<transport>"),
        ("SIP/2.0/UDP [zz::1]", "Via: invalid IPv6 address"),
        ("SIP/2.0/UDP bad_host!", "Via: invalid host 'bad_host!'"),
        ("SIP/2.0/UDP h;branch", "Via: branch '' is not a token"),
        ("SIP/2.0/UDP h;branch=a/b", "Via: branch 'a/b' is not a token"),
        ("SIP/2.0/UDP h;rport=0", "Via rport: port 0 out of range"),
        ("SIP/2.0/UDP h;rport=abc", "Via rport: bad port"),
        ("SIP/2.0/UDP h;ttl=256", "Via: ttl 256 is not 0..255"),
        ("SIP/2.0/UDP h;ttl", "Via: ttl '' is not 0..255"),
        ("SIP/2.0/UDP h;received", "Via: received parameter without a value"),
        ("SIP/2.0/UDP h;received=not an ip", "Via: malformed parameter"),
        ("SIP/2.0/UDP h;received=1.2.3.4/8", "Via received: invalid host"),
        ("SIP/2.0/UDP h;maddr=", "Via: maddr parameter without a value"),
    ],
)
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        Via.parse(text)
    assert fragment in str(caught.value)


def test_list_errors_name_via() -> None:
    with pytest.raises(SipParseError, match="Via: empty value"):
        Via.parse_all(" ,")
    with pytest.raises(SipParseError, match="Via: unterminated quoted string"):
        Via.parse_all('SIP/2.0/UDP h;x="a, SIP/2.0/UDP b')


@settings(max_examples=300, deadline=None)
@given(vias())
def test_via_round_trip(via: Via) -> None:
    assert Via.parse(via.render()) == via
