"""SDP offers and answers (RFC 4566 / RFC 3264), signalling only."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

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


_DIRECTIONS = frozenset(direction.value for direction in Direction)


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
    """Our audio offer; raises LocalProtocolError when an argument cannot go into SDP."""
    address, address_type = _offer_address(address)
    if not 1 <= rtp_port <= 65534:  # a=rtcp uses rtp_port + 1
        raise LocalProtocolError(f"SDP offer: RTP port {rtp_port} is not in 1..65534")
    _check_codecs(codecs)
    if not username or _TOKEN_RE.fullmatch(username) is None:
        raise LocalProtocolError(f"SDP offer: username {username!r} is not a token")
    if session_id is None:
        session_id = int.from_bytes(_random(random_bytes, 8), "big") >> 1  # fits int64
    elif session_id < 0:
        raise LocalProtocolError(f"SDP offer: session id {session_id} is negative")

    srtp_key = (
        base64.b64encode(_random(random_bytes, SRTP_KEY_SALT_BYTES)).decode("ascii")
        if srtp
        else None
    )
    proto = "RTP/SAVP" if srtp else "RTP/AVP"
    lines = [
        "v=0",
        f"o={username} {session_id} {session_id} IN {address_type} {address}",
        "s=-",
        f"c=IN {address_type} {address}",
        "t=0 0",
        f"m=audio {rtp_port} {proto} " + " ".join(str(c.payload_type) for c in codecs),
    ]
    for codec in codecs:
        encoding = f"{codec.name}/{codec.clock_rate}"
        if codec.channels != 1:
            encoding += f"/{codec.channels}"
        lines.append(f"a=rtpmap:{codec.payload_type} {encoding}")
        if codec.fmtp:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
    if srtp_key is not None:
        lines.append(f"a=crypto:1 {SRTP_SUITE} inline:{srtp_key}")
    lines += [f"a=ptime:{PTIME_MS}", "a=sendrecv", f"a=rtcp:{rtp_port + 1}"]
    return SdpOffer(body=("\r\n".join(lines) + "\r\n").encode("utf-8"), srtp_key=srtp_key)


def _offer_address(address: str) -> tuple[str, str]:
    """(address as SDP writes it, "IP4" | "IP6"); names go out as IP4 (RFC 4566 §5.7 FQDN)."""
    bare = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        parsed = ipaddress.ip_address(bare)
    except ValueError:
        if _HOSTNAME_RE.fullmatch(bare) is None:
            raise LocalProtocolError(
                f"SDP offer: address {address!r} is neither an IP address nor a host name"
            ) from None
        return bare, "IP4"
    return str(parsed), ("IP6" if parsed.version == 6 else "IP4")


def _check_codecs(codecs: Sequence[Codec]) -> None:
    if not codecs:
        raise LocalProtocolError("SDP offer: no codecs to offer")
    seen: set[int] = set()
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


def _random(random_bytes: RandomBytes, count: int) -> bytes:
    data = random_bytes(count)
    if len(data) != count:
        raise LocalProtocolError(f"random_bytes({count}) returned {len(data)} bytes")
    return data


# ---------------------------------------------------------------------------------------------
# Answer


@dataclass(frozen=True, slots=True)
class _Line:
    number: int  # 1-based, for error messages
    kind: str  # the single type letter
    value: str
    raw: str

    def error(self, what: str) -> SipParseError:
        shown = self.raw if len(self.raw) <= 80 else self.raw[:80] + "..."
        return SipParseError(f"SDP line {self.number} {shown!r}: {what}")


def parse_answer(body: bytes) -> SdpAnswer:
    """The first audio stream of an SDP body; SipParseError (naming the line) when unusable."""
    lines = _split_lines(body)
    if not lines or lines[0].kind != "v" or lines[0].value.strip() != "0":
        raise SipParseError("SDP body does not start with 'v=0'")
    session, media = _sections(lines)
    audio = next((section for section in media if _media_type(section[0]) == "audio"), None)
    if audio is None:
        raise SipParseError("SDP body has no m=audio line")

    used: set[int] = {line.number for line in session if line.kind in "vost"}
    m_line = audio[0]
    used.add(m_line.number)
    port, proto, payload_types = _parse_m_line(m_line)

    connection = next((line for line in audio if line.kind == "c"), None)
    if connection is None:
        connection = next((line for line in session if line.kind == "c"), None)
    if connection is None:
        raise m_line.error("no c= line for the audio stream, at media or session level")
    used.add(connection.number)
    address, address_type = _parse_connection(connection)

    session_direction = _direction(session, used)
    direction = _direction(audio, used) or session_direction or Direction.SENDRECV

    rtpmaps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, str] = {}
    crypto: SdpCrypto | None = None
    ptime: int | None = None
    for line in audio[1:]:
        if line.kind != "a":
            continue
        name, _, rest = line.value.partition(":")
        if name == "rtpmap":
            payload_type, encoding = _parse_rtpmap(line, rest)
            rtpmaps.setdefault(payload_type, encoding)
        elif name == "fmtp":
            payload_text, _, params = rest.partition(" ")
            fmtps.setdefault(_payload_number(line, payload_text), params.strip())
        elif name == "crypto" and crypto is None:  # a second one stays among unknown lines
            crypto = _parse_crypto(line, rest)
        elif name == "ptime" and _is_number(rest.strip()):
            ptime = int(rest.strip())
        else:
            continue
        used.add(line.number)

    codec, telephone_event = _resolve_codec(m_line, port, payload_types, rtpmaps, fmtps)
    return SdpAnswer(
        codec=codec,
        remote_address=address,
        address_type=address_type,
        remote_port=port,
        proto=proto,
        payload_types=payload_types,
        direction=direction,
        crypto=crypto,
        telephone_event=telephone_event,
        ptime=ptime,
        unknown_lines=tuple(line.raw for line in lines if line.number not in used),
    )


def negotiated_codec_name(body: bytes) -> str | None:
    """The answer's voice codec as it names it, for CDRs; None when the body is not usable."""
    try:
        answer = parse_answer(body)
    except SipParseError:
        return None
    return None if answer.rejected else answer.codec_name


def _split_lines(body: bytes) -> list[_Line]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"SDP body is not UTF-8 (byte {exc.start})") from None
    lines: list[_Line] = []
    # RFC 4566 wants CRLF; a bare LF is accepted as the RFC advises parsers to.
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        line = _Line(number, raw[:1], raw[2:], raw)
        if len(raw) < 2 or raw[1] != "=" or not ("a" <= raw[0] <= "z" or "A" <= raw[0] <= "Z"):
            raise line.error("not a '<letter>=<value>' line")
        if _CONTROL_RE.search(raw):
            raise line.error("contains a control character")
        lines.append(line)
    return lines


def _sections(lines: list[_Line]) -> tuple[list[_Line], list[list[_Line]]]:
    """The session-level lines, then each media section (its m= line first)."""
    session: list[_Line] = []
    media: list[list[_Line]] = []
    for line in lines:
        if line.kind == "m":
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def _media_type(m_line: _Line) -> str:
    return m_line.value.split(" ", 1)[0].lower()


def _parse_m_line(line: _Line) -> tuple[int, str, tuple[int, ...]]:
    fields = line.value.split()
    if len(fields) < 4:
        raise line.error("an m= line needs media, port, proto and at least one format")
    port_text = fields[1].split("/", 1)[0]  # "port/count" (RFC 4566 §5.14)
    if not _is_number(port_text) or int(port_text) > 65535:
        raise line.error(f"bad port {fields[1]!r}")
    proto = fields[2]
    if "RTP/" not in proto.upper():
        raise line.error(f"audio transport {proto!r} is not RTP")
    return int(port_text), proto, tuple(_payload_number(line, text) for text in fields[3:])


def _parse_connection(line: _Line) -> tuple[str, str]:
    fields = line.value.split()
    if len(fields) != 3 or fields[0].upper() != "IN":
        raise line.error("expected 'c=IN IP4|IP6 <address>'")
    address_type = fields[1].upper()
    address = fields[2].split("/", 1)[0]  # drop a multicast /ttl[/count]
    if address_type == "IP6":
        try:
            return str(ipaddress.IPv6Address(address)), address_type
        except ValueError:
            raise line.error(f"{address!r} is not an IPv6 address") from None
    if address_type == "IP4":
        try:
            return str(ipaddress.IPv4Address(address)), address_type
        except ValueError:
            if _HOSTNAME_RE.fullmatch(address) is None:
                raise line.error(f"{address!r} is not an IPv4 address or host name") from None
            return address, address_type
    raise line.error(f"unknown address type {fields[1]!r}")


def _direction(lines: list[_Line], used: set[int]) -> Direction | None:
    for line in lines:
        if line.kind == "a" and line.value in _DIRECTIONS:
            used.add(line.number)
            return Direction(line.value)
    return None


def _parse_rtpmap(line: _Line, rest: str) -> tuple[int, tuple[str, int, int]]:
    payload_text, _, encoding = rest.partition(" ")
    payload_type = _payload_number(line, payload_text)
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or not all(_is_number(p) for p in parts[1:]):
        raise line.error("expected 'a=rtpmap:<pt> <name>/<rate>[/<channels>]'")
    channels = int(parts[2]) if len(parts) == 3 else 1
    if int(parts[1]) == 0 or channels == 0:
        raise line.error("clock rate and channels must be positive")
    return payload_type, (parts[0], int(parts[1]), channels)


def _parse_crypto(line: _Line, rest: str) -> SdpCrypto:
    fields = rest.split()
    if len(fields) < 3 or not _is_number(fields[0]):
        raise line.error("expected 'a=crypto:<tag> <suite> inline:<key>'")
    key_param = fields[2].split(";", 1)[0]
    method, _, key_info = key_param.partition(":")
    if method.lower() != "inline" or not key_info:
        raise line.error("only inline SRTP keys are supported")
    key = key_info.split("|", 1)[0]
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise line.error("the inline key is not base64") from None
    return SdpCrypto(int(fields[0]), fields[1], key, key_param, tuple(fields[3:]))


def _resolve_codec(
    m_line: _Line,
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
        if payload_type in rtpmaps:
            name, rate, channels = rtpmaps[payload_type]
            found: Codec | None = Codec(
                name, payload_type, rate, channels, fmtps.get(payload_type, "")
            )
        elif payload_type in STATIC_PAYLOAD_TYPES:
            static = STATIC_PAYLOAD_TYPES[payload_type]
            found = Codec(
                static.name,
                payload_type,
                static.clock_rate,
                static.channels,
                fmtps.get(payload_type, ""),
            )
        else:
            found = None
        name = "" if found is None else found.name.lower()
        if name == TELEPHONE_EVENT:
            if telephone_event is None:
                telephone_event = payload_type
        elif name in _SIDE_PAYLOAD_NAMES:
            continue
        elif codec is None and unresolved is None:
            if found is None:
                unresolved = payload_type
            else:
                codec = found
    if codec is None and port != 0:
        if unresolved is not None:
            raise m_line.error(f"payload type {unresolved} has no a=rtpmap")
        raise m_line.error("no voice codec among the payload types")
    return codec, telephone_event


def _payload_number(line: _Line, text: str) -> int:
    if not _is_number(text) or int(text) > 127:
        raise line.error(f"payload type {text!r} is not a number in 0..127")
    return int(text)


def _is_number(text: str) -> bool:
    """ASCII digits only (str.isdigit accepts '²' and '٣'), and short enough for int()."""
    return 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()
