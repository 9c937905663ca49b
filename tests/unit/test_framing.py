"""StreamFramer: Content-Length framing of SIP over TCP/TLS, keep-alives, limits and garbage."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.framing import StreamFramer, StreamFramingError


def request(
    body: bytes = b"",
    *,
    length_header: str = "Content-Length",
    method: str = "BYE",
    line_end: bytes = b"\r\n",
) -> bytes:
    lines = [
        f"{method} sip:bob@127.0.0.1:5060;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1",
        "Call-ID: abc@127.0.0.1",
        f"CSeq: 2 {method}",
        f"{length_header}: {len(body)}",
    ]
    return line_end.join(line.encode() for line in lines) + line_end + line_end + body


def response(
    status: int = 200, body: bytes = b"", *, length_header: str = "Content-Length"
) -> bytes:
    head = (
        f"SIP/2.0 {status} Whatever\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-2\r\n"
        f"Call-ID: x@y\r\nCSeq: 1 INVITE\r\n{length_header}: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def test_one_message_in_one_chunk_comes_out_whole() -> None:
    message = request(b"v=0\r\n")
    assert StreamFramer().feed(message) == [message]


def test_two_messages_in_one_chunk_come_out_separately_in_order() -> None:
    first, second = request(), response(180)
    assert StreamFramer().feed(first + second) == [first, second]


def test_message_split_byte_by_byte_is_returned_once_when_complete() -> None:
    message = response(200, b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
    framer = StreamFramer()
    outputs = [framer.feed(message[i : i + 1]) for i in range(len(message))]
    assert outputs[-1] == [message]
    assert all(out == [] for out in outputs[:-1])
    assert framer.pending == 0


def test_body_is_held_back_until_content_length_bytes_arrived() -> None:
    message = request(b"0123456789")
    framer = StreamFramer()
    assert framer.feed(message[:-3]) == []
    assert framer.pending == len(message) - 3
    assert framer.feed(message[-3:]) == [message]


def test_compact_content_length_form_l_frames_the_body() -> None:
    message = request(b"abc", length_header="l")
    assert StreamFramer().feed(message + response()) == [message, response()]


def test_content_length_name_is_case_insensitive() -> None:
    message = request(b"abcd", length_header="content-LENGTH")
    assert StreamFramer().feed(message) == [message]


def test_bare_lf_line_ends_are_accepted() -> None:
    message = request(b"xy", line_end=b"\n")
    assert StreamFramer().feed(message) == [message]


def test_keepalive_pings_and_pongs_between_messages_are_dropped_and_pings_counted() -> None:
    message = request()
    framer = StreamFramer()
    out = feed_all(framer, [b"\r\n\r\n", message[:10], message[10:], b"\r\n", b"\r", b"\n"])
    assert out == [message]
    assert framer.pings_received == 2  # the leading ping, and the pong pair split over chunks
    assert framer.pending == 0


def test_lone_pong_is_not_counted_as_a_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(response()) == [response()]
    assert framer.pings_received == 0


def test_folded_content_length_value_is_understood() -> None:
    message = b"SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length:\r\n 3\r\n\r\nabc"
    assert StreamFramer().feed(message) == [message]


def test_missing_content_length_is_an_error_naming_the_header() -> None:
    message = b"SIP/2.0 200 OK\r\nCall-ID: a\r\n\r\n"
    with pytest.raises(SipParseError, match="no Content-Length"):
        StreamFramer().feed(message)


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "9999999999"])
def test_malformed_content_length_is_an_error_quoting_the_value(value: str) -> None:
    message = f"SIP/2.0 200 OK\r\nContent-Length: {value}\r\n\r\n".encode()
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(message)


def test_conflicting_content_lengths_are_an_error() -> None:
    message = b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\nab"
    with pytest.raises(SipParseError, match="conflicting Content-Length values: 1, 2"):
        StreamFramer().feed(message)


def test_repeated_equal_content_lengths_are_accepted() -> None:
    message = b"SIP/2.0 200 OK\r\nContent-Length: 2\r\nl: 2\r\n\r\nab"
    assert StreamFramer().feed(message) == [message]


def test_garbage_is_rejected_as_soon_as_its_first_line_is_complete() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match=r"not a SIP start line: b'GET / HTTP/1\.1"):
        framer.feed(b"GET / HTTP/1.1\r\nHost: x")


def test_binary_garbage_without_line_end_is_rejected_after_512_bytes() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\x00" * 511) == []
    with pytest.raises(SipParseError, match="no SIP start line"):
        framer.feed(b"\x00")


def test_messages_before_the_fault_are_handed_back_on_the_error() -> None:
    good = response(100)
    with pytest.raises(StreamFramingError) as caught:
        StreamFramer().feed(good + b"HELLO\r\n\r\n")
    assert caught.value.framed == [good]


def test_a_failed_stream_stays_failed() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError):
        framer.feed(b"junk junk\r\n")
    with pytest.raises(SipParseError, match="stream already failed: not a SIP start line"):
        framer.feed(response())


def test_declared_body_beyond_the_limit_is_refused_without_waiting_for_it() -> None:
    framer = StreamFramer(max_message=1024)
    head = b"SIP/2.0 200 OK\r\nContent-Length: 5000\r\n\r\n"
    with pytest.raises(SipParseError, match="exceeds the 1024-byte limit"):
        framer.feed(head)


def test_endless_header_section_is_refused_at_the_limit() -> None:
    framer = StreamFramer(max_message=1024)
    framer.feed(b"SIP/2.0 200 OK\r\n")
    with pytest.raises(SipParseError, match="header section longer than the 1024-byte limit"):
        for _ in range(100):
            framer.feed(b"X-Filler: " + b"a" * 40 + b"\r\n")
    assert framer.pending == 0


def test_message_exactly_at_the_limit_is_accepted() -> None:
    head = b"SIP/2.0 200 OK\r\nContent-Length: 0000\r\n\r\n"
    body_size = 256 - len(head)
    message = head.replace(b"0000", str(body_size).encode().rjust(4, b"0")) + b"b" * body_size
    assert StreamFramer(max_message=256).feed(message) == [message]


def test_body_containing_a_blank_line_and_sip_text_is_not_split() -> None:
    inner = response(486)
    message = request(b"\r\n\r\n" + inner)
    assert StreamFramer().feed(message + inner) == [message, inner]


def test_tiny_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_message must be at least 64"):
        StreamFramer(max_message=10)


# Hypothesis: any chunking of any stream of messages and keep-alives yields the same messages.

_bodies = st.binary(max_size=300)
_messages = st.one_of(
    st.builds(
        lambda b, h: request(b, length_header=h),
        _bodies,
        st.sampled_from(["l", "Content-Length", "CONTENT-length"]),
    ),
    st.builds(lambda s, b: response(s, b), st.integers(100, 699), _bodies),
)
_keepalive = st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n"])


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(_keepalive, _messages), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
)
def test_any_chunking_of_a_message_stream_yields_the_same_messages(
    items: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(keepalive + message for keepalive, message in items)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    framer = StreamFramer()
    assert feed_all(framer, chunks) == [message for _, message in items]
    assert framer.pending == 0
