"""SDP offers and answers (RFC 4566 / RFC 3264), signalling only.

Over 500 lines on purpose: the offer we build and the answer we read share the codec table,
the line splitter and the rtpmap/crypto grammar; the re-offer answers live in uac_sdp.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.transport import Address

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: str = ""


DEFAULT_CODECS: tuple[Codec, ...] = (
    Codec("PCMA", 8, 8000),
    Codec("PCMU", 0, 8000),
    Codec("G722", 9, 8000),
    Codec("opus", 111, 48000, 2, "minptime=10;useinbandfec=1"),
    Codec("telephone-event", 101, 8000, 1, "0-15"),
)

TELEPHONE_EVENT = "telephone-event"
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEY_SALT_BYTES = 30  # 16-byte AES key + 14-byte salt (RFC 4568 §6.2.1)
PTIME_MS = 20

# RFC 3551 table 4: audio payload types that need no a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, Codec] = {
    codec.payload_type: codec
    for codec in (
        Codec("PCMU", 0, 8000),
        Codec("GSM", 3, 8000),
        Codec("G723", 4, 8000),
        Codec("DVI4", 5, 8000),
        Codec("DVI4", 6, 16000),
        Codec("LPC", 7, 8000),
        Codec("PCMA", 8, 8000),
        Codec("G722", 9, 8000),
        Codec("L16", 10, 44100, 2),
        Codec("L16", 11, 44100),
        Codec("QCELP", 12, 8000),
        Codec("CN", 13, 8000),
        Codec("MPA", 14, 90000),
        Codec("G728", 15, 8000),
        Codec("DVI4", 16, 11025),
        Codec("DVI4", 17, 22050),
        Codec("G729", 18, 8000),
    )
}
# Payloads that travel beside the voice codec and never are the voice codec: DTMF events
# (RFC 4733) and comfort noise (RFC 3389).
_SIDE_PAYLOAD_NAMES = frozenset({TELEPHONE_EVENT, "cn"})

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9.])?")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_CODEC_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # a token, so never '/' nor spaces
_FMTP_RE = re.compile(r"[\x20-\x7e]*")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_DIGITS = 10  # caps int() on network input (and keeps numbers in sane ranges)


class Direction(StrEnum):
    """RFC 3264 §5.1 media direction attributes."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


_DIRECTIONS = {direction.value: direction for direction in Direction}


@dataclass(frozen=True, slots=True)
class SdpOffer:
    """An offer body and, when SRTP was offered, the base64 inline key we gave the peer."""

    body: bytes
    srtp_key: str | None


Offer = SdpOffer  # the name docs/architecture.md uses


@dataclass(frozen=True, slots=True)
class SdpCrypto:
    """One RFC 4568 a=crypto attribute: `key` is the base64 key||salt of its inline key."""

    tag: int
    suite: str
    key: str
    key_params: str  # the whole first key-param as written, e.g. "inline:KEY|2^31"
    session_params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SdpAnswer:
    """What we use from an answer: the first audio stream, its codec, address and crypto.

    `codec` is the first payload of the audio m= line that is not telephone-event or comfort
    noise, named as the answer writes it. It is None only for a rejected stream (port 0) whose
    payloads cannot be resolved; an accepted stream without a usable codec does not parse.
    """

    codec: Codec | None
    remote_address: str
    address_type: str  # "IP4" or "IP6"
    remote_port: int
    proto: str
    payload_types: tuple[int, ...]
    direction: Direction = Direction.SENDRECV
    crypto: SdpCrypto | None = None
    telephone_event: int | None = None
    ptime: int | None = None
    unknown_lines: tuple[str, ...] = ()

    @property
    def rejected(self) -> bool:
        """RFC 3264 §6: port 0 in the answer rejects the stream."""
        return self.remote_port == 0

    @property
    def codec_name(self) -> str | None:
        return None if self.codec is None else self.codec.name

    @property
    def payload_type(self) -> int | None:
        return None if self.codec is None else self.codec.payload_type

    @property
    def clock_rate(self) -> int | None:
        return None if self.codec is None else self.codec.clock_rate

    @property
    def remote_rtp(self) -> Address:
        return (self.remote_address, self.remote_port)

    @property
    def is_srtp(self) -> bool:
        return "SAVP" in self.proto.upper()


# ---------------------------------------------------------------------------------------------
# Offer


def build_offer(
    *,
    address: str,
    rtp_port: int,
    codecs: Sequence[Codec] = DEFAULT_CODECS,
    srtp: bool = False,
    session_id: int | None = None,
    username: str = "outbound",
    random_bytes: RandomBytes = os.urandom,
) -> SdpOffer:
    """Our audio offer; raises LocalProtocolError when an argument cannot go into SDP.

    Everything but the port, session id and key is checked and rendered once per distinct
    (address, codecs, username) and cached: a dialer offers the same few over and over.
    """
    origin_tail, connection = _offer_address(address)
    if not 1 <= rtp_port <= 65534:  # a=rtcp uses rtp_port + 1
        raise LocalProtocolError(f"SDP offer: RTP port {rtp_port} is not in 1..65534")
    payloads, attributes = _codec_lines(codecs if type(codecs) is tuple else tuple(codecs))
    _check_username(username)
    if session_id is None:
        session_id = int.from_bytes(_random(random_bytes, 8), "big") >> 1  # fits int64
    elif session_id < 0:
        raise LocalProtocolError(f"SDP offer: session id {session_id} is negative")
    if srtp:
        srtp_key: str | None = base64.b64encode(_random(random_bytes, SRTP_KEY_SALT_BYTES)).decode(
            "ascii"
        )
        proto = "RTP/SAVP"
        crypto = f"a=crypto:1 {SRTP_SUITE} inline:{srtp_key}\r\n"
    else:
        srtp_key = None
        proto = "RTP/AVP"
        crypto = ""
    body = (
        f"v=0\r\no={username} {session_id} {session_id} {origin_tail}\r\ns=-\r\n{connection}"
        f"t=0 0\r\nm=audio {rtp_port} {proto} {payloads}\r\n{attributes}{crypto}"
        f"a=ptime:{PTIME_MS}\r\na=sendrecv\r\na=rtcp:{rtp_port + 1}\r\n"
    )
    return SdpOffer(body=body.encode("utf-8"), srtp_key=srtp_key)


@lru_cache(maxsize=256)
def _offer_address(address: str) -> tuple[str, str]:
    """("IN IP4 <address>", "c=IN IP4 <address>\r\n"); names go out as IP4 (RFC 4566 §5.7)."""
    bare = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        parsed = ipaddress.ip_address(bare)
    except ValueError:
        if _HOSTNAME_RE.fullmatch(bare) is None:
            raise LocalProtocolError(
                f"SDP offer: address {address!r} is neither an IP address nor a host name"
            ) from None
        written, address_type = bare, "IP4"
    else:
        written, address_type = str(parsed), ("IP6" if parsed.version == 6 else "IP4")
    return f"IN {address_type} {written}", f"c=IN {address_type} {written}\r\n"


@lru_cache(maxsize=64)
def _check_username(username: str) -> None:
    if not username or _TOKEN_RE.fullmatch(username) is None:
        raise LocalProtocolError(f"SDP offer: username {username!r} is not a token")


@lru_cache(maxsize=64)
def _codec_lines(codecs: tuple[Codec, ...]) -> tuple[str, str]:
    """(payload type list of the m= line, the a=rtpmap/a=fmtp lines) of checked codecs."""
    if not codecs:
        raise LocalProtocolError("SDP offer: no codecs to offer")
    seen: set[int] = set()
    lines: list[str] = []
    for codec in codecs:
        if not 0 <= codec.payload_type <= 127:
            raise LocalProtocolError(f"SDP offer: {codec} has a payload type outside 0..127")
        if codec.payload_type in seen:
            raise LocalProtocolError(f"SDP offer: payload type {codec.payload_type} offered twice")
        seen.add(codec.payload_type)
        if _CODEC_NAME_RE.fullmatch(codec.name) is None:
            raise LocalProtocolError(f"SDP offer: codec name {codec.name!r} is not a token")
        if codec.clock_rate <= 0 or codec.channels <= 0:
            raise LocalProtocolError(f"SDP offer: {codec} needs a positive rate and channels")
        if _FMTP_RE.fullmatch(codec.fmtp) is None:
            raise LocalProtocolError(f"SDP offer: fmtp of {codec} is not printable ASCII")
        lines.append(rtpmap_line(codec))
    return " ".join(str(codec.payload_type) for codec in codecs), "".join(lines)


def rtpmap_line(codec: Codec) -> str:
    """`a=rtpmap` (and `a=fmtp` when the codec has parameters), each ending in CRLF."""
    encoding = f"{codec.name}/{codec.clock_rate}"
    if codec.channels != 1:
        encoding += f"/{codec.channels}"
    line = f"a=rtpmap:{codec.payload_type} {encoding}\r\n"
    if codec.fmtp:
        line += f"a=fmtp:{codec.payload_type} {codec.fmtp}\r\n"
    return line


def _random(random_bytes: RandomBytes, count: int) -> bytes:
    data = random_bytes(count)
    if len(data) != count:
        raise LocalProtocolError(f"random_bytes({count}) returned {len(data)} bytes")
    return data


# ---------------------------------------------------------------------------------------------
# Answer
#
# Lines travel as (line number, raw text) pairs: the number is only for error messages, and
# a line's type letter is raw[0], its value raw[2:].

SdpLine = tuple[int, str]


def line_error(line: SdpLine, what: str) -> SipParseError:
    number, raw = line
    shown = raw if len(raw) <= 80 else raw[:80] + "..."
    return SipParseError(f"SDP line {number} {shown!r}: {what}")


def parse_answer(body: bytes) -> SdpAnswer:
    """The first audio stream of an SDP body; SipParseError (naming the line) when unusable."""
    lines = split_sdp_lines(body)
    first = lines[0][1] if lines else ""
    if first[:1] != "v" or first[2:].strip() != "0":
        raise SipParseError("SDP body does not start with 'v=0'")
    count = len(lines)
    kinds = [raw[0] for _, raw in lines]
    audio = -1
    audio_end = count
    media_start = kinds.index("m") if "m" in kinds else count
    for index in range(media_start, count):
        if kinds[index] == "m":
            if audio >= 0:
                audio_end = index
                break
            if lines[index][1][2:].split(" ", 1)[0].lower() == "audio":
                audio = index
    if audio < 0:
        raise SipParseError("SDP body has no m=audio line")

    used = {index for index in range(media_start) if kinds[index] in "vost"}
    used.add(audio)
    m_line = lines[audio]
    port, proto, payload_types = parse_media_line(m_line)

    connection = _first_of_kind(kinds, "c", audio + 1, audio_end)
    if connection < 0:
        connection = _first_of_kind(kinds, "c", 0, media_start)
    if connection < 0:
        raise line_error(m_line, "no c= line for the audio stream, at media or session level")
    used.add(connection)
    address, address_type = _parse_connection(lines[connection])

    session_direction = _direction(lines, kinds, 0, media_start, used)
    direction = _direction(lines, kinds, audio + 1, audio_end, used) or session_direction
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, str] = {}
    crypto: SdpCrypto | None = None
    ptime: int | None = None
    for index in range(audio + 1, audio_end):
        if kinds[index] != "a":
            continue
        line = lines[index]
        name, _, rest = line[1][2:].partition(":")
        if name == "rtpmap":
            payload_type, encoding = parse_rtpmap(line, rest)
            rtpmaps.setdefault(payload_type, encoding)
        elif name == "fmtp":
            payload_text, _, params = rest.partition(" ")
            fmtps.setdefault(_payload_number(line, payload_text), params.strip())
        elif name == "crypto" and crypto is None:  # a second one stays among unknown lines
            crypto = parse_crypto(line, rest)
        elif name == "ptime" and _is_number(rest.strip()):
            ptime = int(rest.strip())
        else:
            continue
        used.add(index)

    codec, telephone_event = _resolve_codec(m_line, port, payload_types, rtpmaps, fmtps)
    return SdpAnswer(
        codec=codec,
        remote_address=address,
        address_type=address_type,
        remote_port=port,
        proto=proto,
        payload_types=payload_types,
        direction=direction or Direction.SENDRECV,
        crypto=crypto,
        telephone_event=telephone_event,
        ptime=ptime,
        unknown_lines=tuple(lines[i][1] for i in range(count) if i not in used),
    )


def negotiated_codec_name(body: bytes) -> str | None:
    """The answer's voice codec as it names it, for CDRs; None when the body is not usable."""
    try:
        answer = parse_answer(body)
    except SipParseError:
        return None
    return None if answer.rejected else answer.codec_name


# A body whose every line is `<letter>=<value>` without control characters, CRLF or LF ended,
# and without blank lines: the common case, split without a Python loop.
_WELL_FORMED_RE = re.compile(
    r"(?:[A-Za-z]=[^\x00-\x1f\x7f]*\r?\n)*(?:[A-Za-z]=[^\x00-\x1f\x7f]*\r?)?"
)


def split_sdp_lines(body: bytes) -> list[SdpLine]:
    """The non-blank lines of a body, checked to be `<letter>=<value>` without controls."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"SDP body is not UTF-8 (byte {exc.start})") from None
    if _WELL_FORMED_RE.fullmatch(text) is not None:
        parts = text.replace("\r\n", "\n").split("\n")
        if parts[-1] == "" or parts[-1] == "\r":
            parts.pop()
        elif parts[-1][-1:] == "\r":
            parts[-1] = parts[-1][:-1]
        return list(enumerate(parts, 1))
    # RFC 4566 wants CRLF; a bare LF is accepted as the RFC advises parsers to.
    lines: list[SdpLine] = []
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        if len(raw) < 2 or raw[1] != "=" or not ("a" <= raw[0] <= "z" or "A" <= raw[0] <= "Z"):
            raise line_error((number, raw), "not a '<letter>=<value>' line")
        if _CONTROL_RE.search(raw):
            raise line_error((number, raw), "contains a control character")
        lines.append((number, raw))
    return lines


def _first_of_kind(kinds: list[str], kind: str, start: int, end: int) -> int:
    try:
        return kinds.index(kind, start, end)
    except ValueError:
        return -1


def parse_media_line(line: SdpLine) -> tuple[int, str, tuple[int, ...]]:
    """(port, proto, payload types) of an RTP `m=` line."""
    fields = line[1][2:].split()
    if len(fields) < 4:
        raise line_error(line, "an m= line needs media, port, proto and at least one format")
    port_text = fields[1].split("/", 1)[0]  # "port/count" (RFC 4566 §5.14)
    if not _is_number(port_text) or int(port_text) > 65535:
        raise line_error(line, f"bad port {fields[1]!r}")
    proto = fields[2]
    if "RTP/" not in proto.upper():
        raise line_error(line, f"audio transport {proto!r} is not RTP")
    return int(port_text), proto, tuple(_payload_number(line, text) for text in fields[3:])


def _parse_connection(line: SdpLine) -> tuple[str, str]:
    fields = line[1][2:].split()
    if len(fields) != 3 or fields[0].upper() != "IN":
        raise line_error(line, "expected 'c=IN IP4|IP6 <address>'")
    address_type = fields[1].upper()
    address = fields[2].split("/", 1)[0]  # drop a multicast /ttl[/count]
    if address_type != "IP4" and address_type != "IP6":
        raise line_error(line, f"unknown address type {fields[1]!r}")
    normal = _normal_address(address_type, address)
    if normal is None:
        if address_type == "IP6":
            raise line_error(line, f"{address!r} is not an IPv6 address")
        raise line_error(line, f"{address!r} is not an IPv4 address or host name")
    return normal, address_type


@lru_cache(maxsize=4096)
def _normal_address(address_type: str, address: str) -> str | None:
    """The address as we report it (IPs normalised, IP4 host names as written), or None."""
    try:
        if address_type == "IP6":
            return str(ipaddress.IPv6Address(address))
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        if address_type == "IP4" and _HOSTNAME_RE.fullmatch(address) is not None:
            return address
        return None


def _direction(
    lines: list[SdpLine], kinds: list[str], start: int, end: int, used: set[int]
) -> Direction | None:
    for index in range(start, end):
        if kinds[index] == "a":
            value = lines[index][1][2:]
            if value in _DIRECTIONS:
                used.add(index)
                return _DIRECTIONS[value]
    return None


def parse_rtpmap(line: SdpLine, rest: str) -> tuple[int, tuple[str, int, int]]:
    """(payload type, (name, rate, channels)) of the value after `a=rtpmap:`."""
    parsed = _rtpmap_value(rest)
    if parsed is not None:
        return parsed
    payload_text, _, encoding = rest.partition(" ")
    _payload_number(line, payload_text)
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or not all(_is_number(p) for p in parts[1:]):
        raise line_error(line, "expected 'a=rtpmap:<pt> <name>/<rate>[/<channels>]'")
    raise line_error(line, "clock rate and channels must be positive")


@lru_cache(maxsize=1024)
def _rtpmap_value(rest: str) -> tuple[int, tuple[str, int, int]] | None:
    """A well-formed rtpmap value parsed (they repeat from call to call), else None."""
    payload_text, _, encoding = rest.partition(" ")
    if not _is_number(payload_text) or int(payload_text) > 127:
        return None
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or not all(_is_number(p) for p in parts[1:]):
        return None
    channels = int(parts[2]) if len(parts) == 3 else 1
    if int(parts[1]) == 0 or channels == 0:
        return None
    return int(payload_text), (parts[0], int(parts[1]), channels)


def parse_crypto(line: SdpLine, rest: str) -> SdpCrypto:
    """The value after `a=crypto:` (RFC 4568), inline keys only."""
    fields = rest.split()
    if len(fields) < 3 or not _is_number(fields[0]):
        raise line_error(line, "expected 'a=crypto:<tag> <suite> inline:<key>'")
    key_param = fields[2].split(";", 1)[0]
    method, _, key_info = key_param.partition(":")
    if method.lower() != "inline" or not key_info:
        raise line_error(line, "only inline SRTP keys are supported")
    key = key_info.split("|", 1)[0]
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise line_error(line, "the inline key is not base64") from None
    return SdpCrypto(int(fields[0]), fields[1], key, key_param, tuple(fields[3:]))


def resolve_payload(
    payload_type: int, rtpmaps: dict[int, tuple[str, int, int]]
) -> tuple[str, int, int] | None:
    """(name, rate, channels) of a payload type: its a=rtpmap, else the RFC 3551 table."""
    encoding = rtpmaps.get(payload_type)
    if encoding is not None:
        return encoding
    static = STATIC_PAYLOAD_TYPES.get(payload_type)
    if static is None:
        return None
    return static.name, static.clock_rate, static.channels


def _resolve_codec(
    m_line: SdpLine,
    port: int,
    payload_types: tuple[int, ...],
    rtpmaps: dict[int, tuple[str, int, int]],
    fmtps: dict[int, str],
) -> tuple[Codec | None, int | None]:
    """(first voice codec, telephone-event payload type) of the audio stream."""
    codec: Codec | None = None
    telephone_event: int | None = None
    unresolved: int | None = None
    for payload_type in payload_types:
        encoding = resolve_payload(payload_type, rtpmaps)
        name = "" if encoding is None else encoding[0].lower()
        if name == TELEPHONE_EVENT:
            if telephone_event is None:
                telephone_event = payload_type
        elif name in _SIDE_PAYLOAD_NAMES:
            continue
        elif codec is None and unresolved is None:
            if encoding is None:
                unresolved = payload_type
            else:
                codec = Codec(
                    encoding[0], payload_type, encoding[1], encoding[2], fmtps.get(payload_type, "")
                )
    if codec is None and port != 0:
        if unresolved is not None:
            raise line_error(m_line, f"payload type {unresolved} has no a=rtpmap")
        raise line_error(m_line, "no voice codec among the payload types")
    return codec, telephone_event


def _payload_number(line: SdpLine, text: str) -> int:
    if not _is_number(text) or int(text) > 127:
        raise line_error(line, f"payload type {text!r} is not a number in 0..127")
    return int(text)


def _is_number(text: str) -> bool:
    """ASCII digits only (str.isdigit accepts '²' and '٣'), and short enough for int()."""
    return text.isdigit() and text.isascii() and len(text) <= _MAX_DIGITS
