"""SDP: the reference offer (with its FIXes), answer parsing, malformed answers, properties."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.sdp import (
    DEFAULT_CODECS,
    Codec,
    Direction,
    SdpAnswer,
    build_offer,
    negotiated_codec_name,
    parse_answer,
)


def counting_bytes(count: int) -> bytes:
    return bytes(range(count))


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# --- offers -----------------------------------------------------------------------------------


def test_reference_offer() -> None:
    offer = build_offer(address="192.0.2.10", rtp_port=10000, session_id=42)
    assert offer.srtp_key is None
    assert offer.body.decode().split("\r\n") == [
        "v=0",
        "o=outbound 42 42 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 10000 RTP/AVP 8 0 9 111 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp:10001",
        "",
    ]


def test_every_line_ends_in_crlf() -> None:
    body = build_offer(address="192.0.2.10", rtp_port=10000, srtp=True).body
    assert body.endswith(b"\r\n")
    assert body.count(b"\n") == body.count(b"\r\n") == body.count(b"\r")


def test_srtp_offer_returns_its_key() -> None:
    offer = build_offer(
        address="192.0.2.10", rtp_port=10000, srtp=True, session_id=1, random_bytes=counting_bytes
    )
    key = base64.b64encode(bytes(range(30))).decode()
    assert offer.srtp_key == key
    lines = offer.body.decode().split("\r\n")
    assert "m=audio 10000 RTP/SAVP 8 0 9 111 101" in lines
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}" in lines
    assert lines.index(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}") < lines.index(
        "a=sendrecv"
    )


def test_srtp_keys_differ_between_offers() -> None:
    keys = {build_offer(address="192.0.2.1", rtp_port=4000, srtp=True).srtp_key for _ in range(3)}
    assert len(keys) == 3
    assert all(key and len(base64.b64decode(key)) == 30 for key in keys)


def test_session_id_comes_from_random_bytes_when_not_given() -> None:
    body = build_offer(address="192.0.2.1", rtp_port=4000, random_bytes=counting_bytes).body
    session_id = int.from_bytes(bytes(range(8)), "big") >> 1
    assert f"o=outbound {session_id} {session_id} IN IP4 192.0.2.1" in body.decode()


@pytest.mark.parametrize(
    ("address", "written", "address_type"),
    [
        ("2001:db8::1", "2001:db8::1", "IP6"),
        ("[2001:db8::1]", "2001:db8::1", "IP6"),
        ("2001:DB8:0:0::1", "2001:db8::1", "IP6"),
        ("198.51.100.7", "198.51.100.7", "IP4"),
        ("media.example.com", "media.example.com", "IP4"),
    ],
)
def test_offer_address_family(address: str, written: str, address_type: str) -> None:
    text = build_offer(address=address, rtp_port=4000, session_id=7, username="u1").body.decode()
    assert f"o=u1 7 7 IN {address_type} {written}\r\n" in text
    assert f"c=IN {address_type} {written}\r\n" in text


def test_offer_follows_the_codec_order_given() -> None:
    codecs = (DEFAULT_CODECS[3], Codec("G729", 18, 8000), DEFAULT_CODECS[4])
    text = build_offer(address="192.0.2.1", rtp_port=4000, codecs=codecs).body.decode()
    assert "m=audio 4000 RTP/AVP 111 18 101\r\n" in text
    assert "a=rtpmap:18 G729/8000\r\n" in text
    assert "a=fmtp:18" not in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"address": ""}, "neither an IP address nor a host name"),
        ({"address": "192.0.2.1\r\nm=video"}, "neither an IP address"),
        ({"address": "bad host"}, "neither an IP address"),
        ({"rtp_port": 0}, "RTP port 0"),
        ({"rtp_port": 65535}, "RTP port 65535"),
        ({"codecs": ()}, "no codecs"),
        ({"codecs": (Codec("PCMU", 0, 8000), Codec("X", 0, 8000))}, "offered twice"),
        ({"codecs": (Codec("X", 128, 8000),)}, "outside 0..127"),
        ({"codecs": (Codec("opus/2", 111, 48000),)}, "not a token"),
        ({"codecs": (Codec("X", 96, 0),)}, "positive rate"),
        ({"codecs": (Codec("X", 96, 8000, 1, "a\r\nb"),)}, "not printable"),
        ({"username": "two words"}, "not a token"),
        ({"session_id": -1}, "negative"),
        ({"srtp": True, "random_bytes": lambda n: b"short"}, "returned 5 bytes"),
    ],
)
def test_bad_offer_arguments_raise_local_protocol_error(
    arguments: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {"address": "192.0.2.1", "rtp_port": 4000, "session_id": 1}
    call.update(arguments)
    with pytest.raises(LocalProtocolError, match=r"SDP offer|random_bytes") as raised:
        build_offer(**call)  # type: ignore[arg-type]
    assert message in str(raised.value)


# --- answers ----------------------------------------------------------------------------------

SESSION = ("v=0", "o=- 1 1 IN IP4 203.0.113.5", "s=-", "c=IN IP4 203.0.113.5", "t=0 0")


def test_typical_answer() -> None:
    answer = parse_answer(
        sdp(
            *SESSION,
            "m=audio 30000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
        )
    )
    assert answer.codec == Codec("PCMA", 8, 8000)
    assert (answer.codec_name, answer.payload_type, answer.clock_rate) == ("PCMA", 8, 8000)
    assert answer.remote_rtp == ("203.0.113.5", 30000)
    assert answer.address_type == "IP4"
    assert answer.direction is Direction.SENDRECV
    assert answer.telephone_event == 101
    assert answer.ptime == 20
    assert answer.crypto is None and not answer.is_srtp and not answer.rejected
    assert answer.unknown_lines == ()


@pytest.mark.parametrize(
    ("media", "codec"),
    [
        # static payload types need no rtpmap
        (["m=audio 1 RTP/AVP 0"], Codec("PCMU", 0, 8000)),
        (["m=audio 1 RTP/AVP 18"], Codec("G729", 18, 8000)),
        (["m=audio 1 RTP/AVP 9 8"], Codec("G722", 9, 8000)),
        # the name as the answer writes it
        (["m=audio 1 RTP/AVP 8", "a=rtpmap:8 pcma/8000"], Codec("pcma", 8, 8000)),
        # telephone-event and comfort noise are skipped, whatever their position
        (
            ["m=audio 1 RTP/AVP 101 13 0", "a=rtpmap:101 telephone-event/8000"],
            Codec("PCMU", 0, 8000),
        ),
        # a dynamic type through rtpmap, channels and fmtp carried along
        (
            ["m=audio 1 RTP/AVP 96 0", "a=rtpmap:96 opus/48000/2", "a=fmtp:96 useinbandfec=1"],
            Codec("opus", 96, 48000, 2, "useinbandfec=1"),
        ),
        # an rtpmap overrides the static table (RFC 4566 lets it)
        (["m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU/16000"], Codec("PCMU", 0, 16000)),
        # rtpmaps for types not in the m= line do not matter
        (["m=audio 1 RTP/AVP 8", "a=rtpmap:96 foo/8000"], Codec("PCMA", 8, 8000)),
    ],
)
def test_codec_resolution(media: list[str], codec: Codec) -> None:
    assert parse_answer(sdp(*SESSION, *media)).codec == codec


@pytest.mark.parametrize(
    ("session_attrs", "media_attrs", "direction"),
    [
        ([], [], Direction.SENDRECV),
        ([], ["a=sendonly"], Direction.SENDONLY),
        (["a=recvonly"], [], Direction.RECVONLY),
        (["a=inactive"], ["a=sendrecv"], Direction.SENDRECV),
        (["a=sendrecv"], ["a=inactive"], Direction.INACTIVE),
    ],
)
def test_direction(session_attrs: list[str], media_attrs: list[str], direction: Direction) -> None:
    body = sdp(*SESSION, *session_attrs, "m=audio 1 RTP/AVP 0", *media_attrs)
    assert parse_answer(body).direction is direction


def test_media_connection_wins_over_session_connection() -> None:
    answer = parse_answer(sdp(*SESSION, "m=audio 4000 RTP/AVP 0", "c=IN IP6 2001:DB8::0:5"))
    assert answer.remote_rtp == ("2001:db8::5", 4000)
    assert answer.address_type == "IP6"


def test_session_connection_alone_is_enough_and_names_are_accepted() -> None:
    answer = parse_answer(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 x",
            "s=-",
            "c=IN IP4 media.example.net/127",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
        )
    )
    assert answer.remote_address == "media.example.net"


def test_first_audio_stream_is_used_and_the_rest_is_kept_in_order() -> None:
    answer = parse_answer(
        sdp(
            *SESSION,
            "b=AS:64",
            "a=group:BUNDLE 0",
            "m=video 5000 RTP/AVP 96",
            "a=rtpmap:96 VP8/90000",
            "m=audio 6000 RTP/AVP 0",
            "a=rtcp:6001",
            "a=X-custom:anything at all",
            "a=ptime:abc",
            "m=audio 7000 RTP/AVP 8",
        )
    )
    assert answer.remote_port == 6000 and answer.codec_name == "PCMU"
    assert answer.ptime is None
    assert answer.unknown_lines == (
        "b=AS:64",
        "a=group:BUNDLE 0",
        "m=video 5000 RTP/AVP 96",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp:6001",
        "a=X-custom:anything at all",
        "a=ptime:abc",
        "m=audio 7000 RTP/AVP 8",
    )


def test_crypto_answer() -> None:
    key = base64.b64encode(bytes(30)).decode()
    answer = parse_answer(
        sdp(
            *SESSION,
            "m=audio 4000 RTP/SAVP 0",
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{key}|2^31|1:1 UNENCRYPTED_SRTCP",
            "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + key,
        )
    )
    assert answer.is_srtp
    assert answer.crypto is not None
    assert (answer.crypto.tag, answer.crypto.suite, answer.crypto.key) == (
        1,
        "AES_CM_128_HMAC_SHA1_32",
        key,
    )
    assert answer.crypto.key_params == f"inline:{key}|2^31|1:1"
    assert answer.crypto.session_params == ("UNENCRYPTED_SRTCP",)
    assert answer.unknown_lines == ("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + key,)


@pytest.mark.parametrize(
    ("media", "codec"),
    [
        (["m=audio 0 RTP/AVP 0"], Codec("PCMU", 0, 8000)),
        (["m=audio 0 RTP/AVP 111"], None),  # rejected; dynamic type with no rtpmap
        (["m=audio 0 RTP/AVP 101"], None),
    ],
)
def test_rejected_stream(media: list[str], codec: Codec | None) -> None:
    answer = parse_answer(sdp(*SESSION, *media))
    assert answer.rejected and answer.remote_port == 0
    assert answer.codec == codec


def test_bare_lf_line_ends_are_accepted() -> None:
    body = "\n".join([*SESSION, "m=audio 4000 RTP/AVP 8"]).encode()
    assert parse_answer(body).codec_name == "PCMA"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"v=0\r\n\xff\xfe\r\n", "not UTF-8"),
        (b"", "does not start with 'v=0'"),
        (sdp("v=1", *SESSION[1:], "m=audio 1 RTP/AVP 0"), "does not start with 'v=0'"),
        (sdp(*SESSION), "no m=audio line"),
        (sdp(*SESSION, "m=video 1 RTP/AVP 96"), "no m=audio line"),
        (sdp(*SESSION, "this is not sdp"), "line 6 'this is not sdp': not a '<letter>=<value>'"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0\x00"), "control character"),
        (sdp(*SESSION, "m=audio 70000 RTP/AVP 0"), "line 6 'm=audio 70000 RTP/AVP 0': bad port"),
        (sdp(*SESSION, "m=audio -1 RTP/AVP 0"), "bad port"),
        (sdp(*SESSION, "m=audio \u0663\u0660 RTP/AVP 0"), "bad port"),
        (sdp(*SESSION, "m=audio \u00b2 RTP/AVP 0"), "bad port"),
        (sdp(*SESSION, "m=audio " + "9" * 5000 + " RTP/AVP 0"), "bad port"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP"), "at least one format"),
        (sdp(*SESSION, "m=audio 1 udp 0"), "is not RTP"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 128"), "payload type '128'"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP PCMU"), "payload type 'PCMU'"),
        (sdp(*SESSION[:3], "t=0 0", "m=audio 1 RTP/AVP 0"), "no c= line"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "c=IN IP4"), "expected 'c=IN IP4|IP6"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "c=ATM NSAP x"), "expected 'c=IN IP4|IP6"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "c=IN IPX 1.2.3.4"), "unknown address type"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "c=IN IP6 1.2.3.4"), "not an IPv6 address"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "c=IN IP4 -bad_"), "not an IPv4 address"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 96"), "payload type 96 has no a=rtpmap"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 96 0"), "payload type 96 has no a=rtpmap"),
        (
            sdp(*SESSION, "m=audio 1 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"),
            "no voice codec",
        ),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU"), "expected 'a=rtpmap"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "a=rtpmap:x PCMU/8000"), "payload type 'x'"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU/0"), "must be positive"),
        (sdp(*SESSION, "m=audio 1 RTP/AVP 0", "a=fmtp:zz a=b"), "payload type 'zz'"),
        (sdp(*SESSION, "m=audio 1 RTP/SAVP 0", "a=crypto:1 X"), "expected 'a=crypto"),
        (sdp(*SESSION, "m=audio 1 RTP/SAVP 0", "a=crypto:1 X key:abc"), "only inline"),
        (sdp(*SESSION, "m=audio 1 RTP/SAVP 0", "a=crypto:1 X inline:%%%"), "not base64"),
    ],
)
def test_malformed_answer_raises_parse_error(body: bytes, message: str) -> None:
    with pytest.raises(SipParseError, match="SDP") as raised:
        parse_answer(body)
    assert message in str(raised.value)


def test_negotiated_codec_name() -> None:
    assert negotiated_codec_name(sdp(*SESSION, "m=audio 1 RTP/AVP 18")) == "G729"
    assert negotiated_codec_name(sdp(*SESSION, "m=audio 0 RTP/AVP 18")) is None
    assert negotiated_codec_name(b"\xff") is None


# --- properties -------------------------------------------------------------------------------

_TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
addresses = st.one_of(
    st.ip_addresses().map(str),
    # RFC 1123 labels: a letter first, no hyphen last
    st.from_regex(
        r"[a-z]([a-z0-9\-]{0,9}[a-z0-9])?(\.[a-z]([a-z0-9\-]{0,9}[a-z0-9])?){0,3}", fullmatch=True
    ),
)
extra_codecs = st.builds(
    Codec,
    name=st.text(_TOKEN, min_size=1, max_size=10).filter(lambda n: n.lower() != "cn"),
    payload_type=st.integers(min_value=96, max_value=127),
    clock_rate=st.integers(min_value=1, max_value=200_000),
    channels=st.integers(min_value=1, max_value=8),
    fmtp=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
)
codec_lists = st.lists(
    st.one_of(st.sampled_from(DEFAULT_CODECS), extra_codecs),
    min_size=1,
    max_size=6,
    unique_by=lambda codec: codec.payload_type,
).filter(lambda codecs: any(c.name.lower() != "telephone-event" for c in codecs))


@given(addresses, st.integers(min_value=1, max_value=65534), codec_lists, st.booleans())
def test_our_offer_parses_back(address: str, port: int, codecs: list[Codec], srtp: bool) -> None:
    offer = build_offer(address=address, rtp_port=port, codecs=codecs, srtp=srtp)
    answer = parse_answer(offer.body)
    voice = [c for c in codecs if c.name.lower() != "telephone-event"]
    assert answer.codec == voice[0]
    assert answer.payload_types == tuple(c.payload_type for c in codecs)
    try:
        expected_address = str(ipaddress.ip_address(address))
    except ValueError:
        expected_address = address
    assert answer.remote_rtp == (expected_address, port)
    assert answer.direction is Direction.SENDRECV and answer.ptime == 20
    assert answer.unknown_lines == (f"a=rtcp:{port + 1}",)
    events = [c.payload_type for c in codecs if c.name.lower() == "telephone-event"]
    assert answer.telephone_event == (events[0] if events else None)
    if srtp:
        assert answer.crypto is not None and answer.crypto.key == offer.srtp_key
    else:
        assert answer.crypto is None


def check_parses_or_raises_parse_error(body: bytes) -> None:
    try:
        answer = parse_answer(body)
    except SipParseError:
        return
    assert isinstance(answer, SdpAnswer)
    assert answer.rejected or answer.codec is not None
    negotiated_codec_name(body)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_parse_error(body: bytes) -> None:
    check_parses_or_raises_parse_error(body)


_OFFER_LINES = (
    build_offer(address="192.0.2.1", rtp_port=4000, srtp=True).body.decode().split("\r\n")
)
_NOISE = [
    "",
    " ",
    "0",
    "96",
    "/",
    ":",
    "a=",
    "c=IN IP6 ",
    "m=audio ",
    "RTP/AVP",
    "\u0663",
    "inline:",
    "rtpmap:",
    "x",
    "65536",
    "|",
    "=",
    "\t",
]


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_OFFER_LINES),
            st.lists(st.sampled_from(_NOISE + _OFFER_LINES), max_size=4).map("".join),
        ),
        max_size=20,
    ),
    st.sampled_from(["\r\n", "\n"]),
)
def test_sdp_shaped_noise_parses_or_raises_parse_error(lines: list[str], newline: str) -> None:
    check_parses_or_raises_parse_error(newline.join(["v=0", *lines]).encode())
