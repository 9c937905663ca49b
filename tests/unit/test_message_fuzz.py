"""Hypothesis: parse_message on hostile bytes only succeeds or raises SipParseError, and
generated messages survive render -> parse unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.message import Request, Response, parse_message

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
host_labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
hosts = st.one_of(
    st.lists(host_labels, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts))),
    st.just("[2001:db8::1]"),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
user_chars = "abcdefghijklmnopqrstuvwxyz0123456789+-_.!~*'()&=$%"
users = st.text(user_chars, min_size=1, max_size=12)
# Text a value may hold: printable ASCII (commas, quotes, semicolons, angle brackets...),
# tabs and non-ASCII letters; never CR, LF or NUL, never spaces at either end.
value_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00\r\n")
    | st.sampled_from(["\t", ",", '"', "<", ">", ";", "\\", "é", "大"]),
    max_size=40,
).map(lambda text: text.strip(" \t"))
methods = st.one_of(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]), tokens)


def hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips", "SIP"]))
    user = draw(st.one_of(st.none(), users))
    uri = f"{scheme}:{'' if user is None else user + '@'}{hostport(draw(hosts), draw(ports))}"
    for name in draw(st.lists(tokens, max_size=3)):
        uri += f";{name}" + draw(st.sampled_from(["", "=x", "=1.2.3.4"]))
    return uri


quoted_strings = value_text.map(
    lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
)


@st.composite
def name_addrs(draw: st.DrawFn, tag: str | None) -> str:
    display = draw(
        st.one_of(
            st.just(""), quoted_strings, st.lists(tokens, min_size=1, max_size=3).map(" ".join)
        )
    )
    space = " " if display else ""
    value = f"{display}{space}<{draw(sip_uris())}>"
    if tag is not None:
        value += f";tag={tag}"
    for name in draw(st.lists(tokens.filter(lambda n: n.lower() != "tag"), max_size=2)):
        value += f";{name}=" + draw(st.one_of(tokens, quoted_strings))
    return value


@st.composite
def vias(draw: st.DrawFn, branch: str | None) -> str:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]))
    value = f"SIP/2.0/{transport} {hostport(draw(hosts), draw(ports))}"
    if branch is not None:
        value += f";branch={branch}"
    for name in draw(st.lists(tokens.filter(lambda n: n.lower() != "branch"), max_size=2)):
        value += f";{name}" + draw(st.sampled_from(["", "=5060", "=192.0.2.1"]))
    return value


@dataclass(frozen=True)
class Generated:
    """A message and what its fast accessors must answer."""

    message: Request | Response
    call_id: str
    cseq: tuple[int, str]
    branch: str | None
    from_tag: str | None
    to_tag: str | None
    listed: tuple[str, ...]  # the elements of the X-List header


@st.composite
def generated_messages(draw: st.DrawFn) -> Generated:
    method = draw(methods)
    branch = draw(st.one_of(st.none(), tokens.map(lambda t: "z9hG4bK" + t)))
    from_tag = draw(st.one_of(st.none(), tokens))
    to_tag = draw(st.one_of(st.none(), tokens))
    call_id = draw(tokens) + draw(st.sampled_from(["", "@192.0.2.1", "@host.example"]))
    cseq = (draw(st.integers(0, 2**31 - 1)), method)
    listed = tuple(draw(st.lists(st.one_of(tokens, quoted_strings), max_size=4)))
    spell = draw(st.booleans())
    headers = [
        ("f" if spell else "From", draw(name_addrs(from_tag))),
        ("t" if spell else "TO", draw(name_addrs(to_tag))),
        ("i" if spell else "call-id", call_id),
        ("CSeq", f"{cseq[0]} {method}"),
    ]
    headers += [("X-G-" + draw(tokens), draw(value_text)) for _ in range(draw(st.integers(0, 4)))]
    if listed:
        headers.append(("X-List", ", ".join(listed)))
    headers = draw(st.permutations(headers))
    # The Via lines stay together and in order: the first one is the top Via.
    via_lines = [("v" if spell else "Via", draw(vias(branch)))]
    via_lines += [("Via", draw(vias(None))) for _ in range(draw(st.integers(0, 2)))]
    at = draw(st.integers(0, len(headers)))
    headers[at:at] = via_lines
    body = draw(st.binary(max_size=200))
    message: Request | Response
    if draw(st.booleans()):
        message = Request(method, draw(sip_uris()), headers, body)
    else:
        message = Response(draw(st.integers(100, 699)), draw(value_text), headers, body)
    return Generated(message, call_id, cseq, branch, from_tag, to_tag, listed)


def parses_or_refuses(data: bytes) -> Request | Response | None:
    """Only two outcomes are allowed: a message, or SipParseError."""
    try:
        return parse_message(data)
    except SipParseError:
        return None


@FUZZ
@given(st.binary(max_size=3000))
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n")
@example(b"\r\n" * 40)
@example(b"SIP/2.0 20")
@example(b"A: b\n\n")
def test_arbitrary_bytes_only_parse_or_raise_sip_parse_error(data: bytes) -> None:
    parses_or_refuses(data)


@FUZZ
@given(generated_messages())
def test_generated_messages_round_trip(generated: Generated) -> None:
    message = generated.message
    data = bytes(message)
    parsed = parse_message(data)
    assert parsed == message
    assert parsed.body == message.body
    assert parsed.header("content-length") == str(len(message.body))
    assert data.endswith(b"\r\n\r\n" + message.body)
    assert parsed.call_id == generated.call_id
    assert parsed.cseq == generated.cseq
    assert parsed.via_branch == generated.branch
    assert parsed.from_tag == generated.from_tag
    assert parsed.to_tag == generated.to_tag
    assert parsed.headers_all("x-list") == list(generated.listed)
    assert message.call_id == generated.call_id  # the built message answers the same
    assert (message.via_branch, message.from_tag, message.to_tag) == (
        generated.branch,
        generated.from_tag,
        generated.to_tag,
    )


INSERTS = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\r\n ", b" ", b"\t", b":", b",", b";", b'"']
INSERTS += [b"<", b">", b"\\", b"\x00", b"\xff", b"\xc3", b"=", b"0", b"-", b"9" * 12]


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        at = draw(st.integers(0, size))
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "delete"]))
        if kind == "flip" and size:
            at = min(at, size - 1)
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "duplicate":
            end = draw(st.integers(at, min(size, at + 200)))
            where = draw(st.integers(0, size))
            data = data[:where] + data[at:end] + data[where:]
        elif kind == "insert":
            data = data[:at] + draw(st.sampled_from(INSERTS)) + data[at:]
        else:
            end = draw(st.integers(at, min(size, at + 20)))
            data = data[:at] + data[end:]
    return data


TYPICAL = [
    b"INVITE sip:+15559870000@carrier.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Campaign" <sip:+15551230000@trunk.example.com>;tag=9fxced76sl\r\n'
    b"To: <sip:+15559870000@carrier.example.net>\r\n"
    b"Call-ID: 3848276298220188511@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:campaign@192.0.2.10:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 32\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n",
    b"SIP/2.0 200 OK\r\n"
    b"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;received=192.0.2.10\r\n"
    b"f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>;tag=2\r\n"
    b"i: x@y\r\nCSeq: 1 INVITE\r\nRecord-Route: <sip:p;lr>, <sip:q;lr>\r\n"
    b"Subject: folded\r\n  line\r\nl: 4\r\n\r\nbody",
]
seeds = st.one_of(st.sampled_from(TYPICAL), generated_messages().map(lambda g: bytes(g.message)))


@FUZZ
@given(seeds.flatmap(mutations))
def test_mutated_messages_only_parse_or_raise_and_parsing_is_a_fixpoint(data: bytes) -> None:
    message = parses_or_refuses(data)
    if message is not None:
        # What we accept we can render, and the rendering parses back to the same message.
        again = parse_message(bytes(message))
        assert again == message
        assert (again.call_id, again.cseq, again.via_branch) == (
            message.call_id,
            message.cseq,
            message.via_branch,
        )
        assert (again.from_tag, again.to_tag) == (message.from_tag, message.to_tag)


@FUZZ
@given(st.sampled_from(TYPICAL), st.integers(0, 400), st.sampled_from(INSERTS))
def test_every_position_of_a_typical_message_survives_an_insert(
    data: bytes, at: int, piece: bytes
) -> None:
    parses_or_refuses(data[:at] + piece + data[at:])
