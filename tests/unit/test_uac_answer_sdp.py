"""Review findings on SDP: answers to re-offers keep the session (RFC 3264 §8), and the lean
line splitter agrees with the careful one."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.sdp import Codec, build_offer, parse_answer
from sipstack.uac_sdp import answer_reoffer

PCMA = Codec("PCMA", 8, 8000)
OUR_OFFER = build_offer(address="192.0.2.1", rtp_port=10000, session_id=42).body
KEY = base64.b64encode(bytes(range(30))).decode()


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def their_offer(*media: str, version: int = 1) -> bytes:
    return sdp(
        "v=0", f"o=uas 7 {version} IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", *media
    )


def lines_of(body: bytes | None) -> list[str]:
    assert body is not None
    return body.decode().split("\r\n")


def test_answer_keeps_our_codec_under_their_payload_number_and_bumps_the_version() -> None:
    offer = their_offer(
        "m=audio 20000 RTP/AVP 0 96 97",
        "a=rtpmap:96 PCMA/8000",
        "a=rtpmap:97 telephone-event/8000",
        "a=fmtp:97 0-16",
        "a=sendrecv",
    )
    answer = answer_reoffer(offer, OUR_OFFER, PCMA)
    assert lines_of(answer) == [
        "v=0",
        "o=outbound 42 43 IN IP4 192.0.2.1",  # o= as before, version + 1: the SDP changed
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 10000 RTP/AVP 96 97",
        "a=rtpmap:96 PCMA/8000",
        "a=rtpmap:97 telephone-event/8000",
        "a=fmtp:97 0-15",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp:10001",
        "",
    ]
    assert answer is not None
    # The same offer again (a session refresh): the same answer, version unchanged.
    assert answer_reoffer(offer, answer, PCMA) == answer
    parsed = parse_answer(answer)
    assert parsed.codec == Codec("PCMA", 96, 8000)
    assert parsed.telephone_event == 97


def test_answer_to_an_offer_identical_to_ours_is_ours_unchanged() -> None:
    narrow = sdp(
        "v=0",
        "o=outbound 42 42 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 10000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp:10001",
    )
    assert answer_reoffer(their_offer("m=audio 20000 RTP/AVP 8"), narrow, PCMA) == narrow


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_direction_is_the_mirror_of_the_offer(offered: str, answered: str) -> None:
    answer = answer_reoffer(their_offer("m=audio 20000 RTP/AVP 8", f"a={offered}"), OUR_OFFER, PCMA)
    assert f"a={answered}" in lines_of(answer)


def test_session_level_direction_counts() -> None:
    offer = sdp(
        "v=0",
        "o=uas 7 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "a=sendonly",
        "m=audio 20000 RTP/AVP 8",
    )
    assert "a=recvonly" in lines_of(answer_reoffer(offer, OUR_OFFER, PCMA))


def test_every_offered_stream_gets_an_m_line_in_order_and_the_others_are_refused() -> None:
    offer = their_offer(
        "m=video 30000 RTP/AVP 96",
        "a=rtpmap:96 VP8/90000",
        "m=audio 20000 RTP/AVP 8",
        "m=audio 20002 RTP/AVP 0",
    )
    answer = lines_of(answer_reoffer(offer, OUR_OFFER, PCMA))
    m_lines = [line for line in answer if line.startswith("m=")]
    assert m_lines == ["m=video 0 RTP/AVP 96", "m=audio 10000 RTP/AVP 8", "m=audio 0 RTP/AVP 0"]


def test_offers_we_cannot_answer_without_changing_the_session() -> None:
    assert answer_reoffer(their_offer("m=audio 20000 RTP/AVP 0"), OUR_OFFER, PCMA) is None
    assert answer_reoffer(their_offer("m=audio 0 RTP/AVP 8"), OUR_OFFER, PCMA) is None
    assert answer_reoffer(their_offer("m=video 20000 RTP/AVP 96"), OUR_OFFER, PCMA) is None
    srtp = their_offer(
        "m=audio 20000 RTP/SAVP 8", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"
    )
    assert answer_reoffer(srtp, OUR_OFFER, PCMA) is None  # SRTP on where we had none


def test_srtp_answer_takes_their_crypto_tag_and_keeps_our_key() -> None:
    ours = build_offer(address="192.0.2.1", rtp_port=10000, srtp=True, session_id=5)
    offer = their_offer(
        "m=audio 20000 RTP/SAVP 8",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}",
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}",
    )
    answer = lines_of(answer_reoffer(offer, ours.body, PCMA))
    assert "m=audio 10000 RTP/SAVP 8" in answer
    assert f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{ours.srtp_key}" in answer
    plain = their_offer("m=audio 20000 RTP/AVP 8")
    assert answer_reoffer(plain, ours.body, PCMA) is None  # SRTP off where we had it


def test_unreadable_offers_raise_parse_errors() -> None:
    with pytest.raises(SipParseError):
        answer_reoffer(b"hello", OUR_OFFER, PCMA)
    with pytest.raises(SipParseError):
        answer_reoffer(their_offer("m=audio 20000 RTP/AVP 8", "a=rtpmap:8 PCMA"), OUR_OFFER, PCMA)


# -- the lean splitter and the careful one give the same answer --------------------------------

_ANSWER_LINES = [
    "v=0",
    "o=- 1 1 IN IP4 203.0.113.5",
    "s=-",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 30000 RTP/AVP 8 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=ptime:20",
    "a=x-unknown:1",
    "a=sendrecv",
]


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(["\r\n", "\n"]), min_size=len(_ANSWER_LINES), max_size=len(_ANSWER_LINES)
    ),
    st.lists(st.integers(min_value=1, max_value=len(_ANSWER_LINES)), max_size=3),
    st.sampled_from(["", " ", "\t", "\u00a0"]),
)
def test_line_endings_and_blank_lines_do_not_change_the_answer(
    endings: list[str], blanks_after: list[int], blank: str
) -> None:
    """Clean bodies take the regex path, bodies with blank lines the line-by-line one."""
    reference = parse_answer(sdp(*_ANSWER_LINES))
    pieces: list[str] = []
    for number, (line, ending) in enumerate(zip(_ANSWER_LINES, endings, strict=True), 1):
        pieces.append(line + ending)
        pieces.extend(blank + ending for _ in range(blanks_after.count(number)))
    assert parse_answer("".join(pieces).encode()) == reference


def test_errors_name_the_same_line_on_either_path() -> None:
    bad = [*_ANSWER_LINES[:6], "a=rtpmap:8 PCMA", *_ANSWER_LINES[7:]]
    with pytest.raises(SipParseError, match=r"SDP line 7 'a=rtpmap:8 PCMA'"):
        parse_answer(sdp(*bad))
    with pytest.raises(SipParseError, match=r"SDP line 8 'a=rtpmap:8 PCMA'"):
        parse_answer(sdp(*bad[:1], "", *bad[1:]))  # a blank line: the careful path
    with pytest.raises(SipParseError, match=r"line 3 's=\\x0b': contains a control"):
        parse_answer(sdp("v=0", "o=- 1 1 IN IP4 x", "s=\x0b", *_ANSWER_LINES[3:]))
