"""Answering a peer's re-offer (re-INVITE, UPDATE) without changing the session (RFC 3264 §8).

We negotiate signalling only: the media side learned the codec and addresses once, from the
first answer, and hears of nothing later. So an answer to a re-offer keeps what we had: the
same voice codec (under the offer's payload number), telephone-event if offered, our address,
port and SRTP key. An offer that lacks our codec, or switches SRTP on or off, cannot be
answered that way (the caller sends 488). The answer repeats our last SDP with the same
o= version when it is identical to it, else increments the version by one (RFC 3264 §8).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.sdp import (
    TELEPHONE_EVENT,
    Codec,
    SdpCrypto,
    SdpLine,
    line_error,
    parse_crypto,
    parse_media_line,
    parse_rtpmap,
    resolve_payload,
    rtpmap_line,
    split_sdp_lines,
)

_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(frozen=True, slots=True)
class _Stream:
    """One m= section: its line, and for RTP audio what an answer needs from it."""

    media: str
    port: int
    proto: str
    formats: str  # the format list as written
    payload_types: tuple[int, ...] = ()
    encodings: tuple[tuple[int, tuple[str, int, int]], ...] = ()  # resolved, in m= order
    fmtps: tuple[tuple[int, str], ...] = ()
    cryptos: tuple[SdpCrypto, ...] = ()
    direction: str | None = None
    ptime: str | None = None
    rtcp: str | None = None


@dataclass(frozen=True, slots=True)
class _Session:
    origin: tuple[str, ...]  # the six o= fields
    name: str  # the s= value
    connection: str  # the c= value that applies to the first audio stream
    direction: str | None  # session-level direction attribute
    streams: tuple[_Stream, ...]

    def first_audio(self) -> _Stream | None:
        return next((s for s in self.streams if s.media == "audio" and s.port != 0), None)


def answer_reoffer(offer: bytes, local: bytes, keep: Codec) -> bytes | None:
    """Our answer to `offer`, given `local` (the last SDP we sent) and the codec in use.

    None when the offer cannot be answered without changing the session; SipParseError when
    the offer (or, for a verbatim offer of ours, `local`) is not readable SDP.
    """
    ours = _parse_session(local)
    theirs = _parse_session(offer)
    our_audio = ours.first_audio()
    their_audio = theirs.first_audio()
    if our_audio is None or their_audio is None:
        return None
    audio_lines = _audio_answer(our_audio, their_audio, theirs.direction, keep)
    if audio_lines is None:
        return None
    streams: list[str] = []
    for stream in theirs.streams:
        if stream is their_audio:
            streams.append(audio_lines)
        else:  # RFC 3264 §6: every offered stream gets an m= line; the others are refused
            streams.append(f"m={stream.media} 0 {stream.proto} {stream.formats}\r\n")
    version = _version(ours)
    same = _render(ours, version, streams)
    if same == local:
        return local
    return _render(ours, version + 1, streams)


def _audio_answer(
    ours: _Stream, theirs: _Stream, session_direction: str | None, keep: Codec
) -> str | None:
    their_srtp = "SAVP" in theirs.proto.upper()
    if their_srtp != ("SAVP" in ours.proto.upper()):
        return None
    voice = _find(theirs, keep.name, keep.clock_rate, keep.channels)
    if voice is None:
        return None
    payloads = [voice]
    our_fmtps = dict(ours.fmtps)
    codec_lines = [
        rtpmap_line(
            Codec(
                keep.name,
                voice,
                keep.clock_rate,
                keep.channels,
                _our_fmtp(ours, our_fmtps, keep.name, keep.clock_rate, keep.channels),
            )
        )
    ]
    our_events = _find(ours, TELEPHONE_EVENT, 8000, 1)
    events = _find(theirs, TELEPHONE_EVENT, 8000, 1) if our_events is not None else None
    if events is not None and our_events is not None:
        payloads.append(events)
        event_codec = Codec(TELEPHONE_EVENT, events, 8000, 1, our_fmtps.get(our_events, ""))
        codec_lines.append(rtpmap_line(event_codec))
    lines = [f"m=audio {ours.port} {theirs.proto} {' '.join(map(str, payloads))}\r\n"]
    lines += codec_lines
    if their_srtp:
        ours_crypto = ours.cryptos[0] if ours.cryptos else None
        if ours_crypto is None:
            return None
        chosen = next((c for c in theirs.cryptos if c.suite == ours_crypto.suite), None)
        if chosen is None:
            return None
        lines.append(f"a=crypto:{chosen.tag} {chosen.suite} {ours_crypto.key_params}\r\n")
    if ours.ptime is not None:
        lines.append(f"a=ptime:{ours.ptime}\r\n")
    offered = theirs.direction or session_direction or "sendrecv"
    lines.append(f"a={_ANSWER_DIRECTION[offered]}\r\n")
    if ours.rtcp is not None:
        lines.append(f"a=rtcp:{ours.rtcp}\r\n")
    return "".join(lines)


def _find(stream: _Stream, name: str, rate: int, channels: int) -> int | None:
    """The payload type under which `stream` carries that encoding, if it does."""
    wanted = (name.lower(), rate, channels)
    for payload_type, (found, found_rate, found_channels) in stream.encodings:
        if (found.lower(), found_rate, found_channels) == wanted:
            return payload_type
    return None


def _our_fmtp(ours: _Stream, fmtps: dict[int, str], name: str, rate: int, channels: int) -> str:
    payload_type = _find(ours, name, rate, channels)
    return "" if payload_type is None else fmtps.get(payload_type, "")


def _version(session: _Session) -> int:
    text = session.origin[2]
    if not text.isascii() or not text.isdigit():
        raise SipParseError(f"SDP o= version {text!r} is not a number")
    return int(text)


def _render(session: _Session, version: int, streams: list[str]) -> bytes:
    user, session_id, _, network, address_type, address = session.origin
    head = (
        f"v=0\r\no={user} {session_id} {version} {network} {address_type} {address}\r\n"
        f"s={session.name}\r\nc={session.connection}\r\nt=0 0\r\n"
    )
    return (head + "".join(streams)).encode("utf-8")


def _parse_session(body: bytes) -> _Session:
    lines = split_sdp_lines(body)
    if not lines or lines[0][1] != "v=0":
        raise SipParseError("SDP body does not start with 'v=0'")
    sections: list[list[SdpLine]] = [[]]
    for line in lines:
        if line[1][0] == "m":
            sections.append([])
        sections[-1].append(line)
    session_lines = sections[0]
    origin = next((line for line in session_lines if line[1][0] == "o"), None)
    if origin is None or len(origin[1][2:].split()) != 6:
        raise SipParseError("SDP body has no readable o= line")
    name = next((line[1][2:] for line in session_lines if line[1][0] == "s"), "-")
    session_connection = next((line[1][2:] for line in session_lines if line[1][0] == "c"), "")
    streams = tuple(_parse_stream(section) for section in sections[1:])
    connection = session_connection
    for stream, section in zip(streams, sections[1:], strict=True):
        if stream.media == "audio" and stream.port != 0:
            connection = next(
                (line[1][2:] for line in section if line[1][0] == "c"), session_connection
            )
            break
    if not connection:
        raise SipParseError("SDP body has no c= line for its audio stream")
    return _Session(
        origin=tuple(origin[1][2:].split()),
        name=name or "-",
        connection=connection,
        direction=_direction_of(session_lines),
        streams=streams,
    )


def _parse_stream(section: list[SdpLine]) -> _Stream:
    m_line = section[0]
    fields = m_line[1][2:].split(None, 3)
    if len(fields) < 4:
        raise line_error(m_line, "an m= line needs media, port, proto and at least one format")
    media = fields[0].lower()
    if media != "audio":
        port_text = fields[1].split("/", 1)[0]
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
        return _Stream(media=media, port=port, proto=fields[2], formats=fields[3])
    port, proto, payload_types = parse_media_line(m_line)
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, str] = {}
    cryptos: list[SdpCrypto] = []
    ptime = rtcp = None
    for line in section[1:]:
        if line[1][0] != "a":
            continue
        attribute, _, rest = line[1][2:].partition(":")
        if attribute == "rtpmap":
            payload_type, encoding = parse_rtpmap(line, rest)
            rtpmaps.setdefault(payload_type, encoding)
        elif attribute == "fmtp":
            payload_text, _, params = rest.partition(" ")
            if payload_text.isascii() and payload_text.isdigit():
                fmtps.setdefault(int(payload_text), params.strip())
        elif attribute == "crypto":
            cryptos.append(parse_crypto(line, rest))
        elif attribute == "ptime":
            ptime = rest.strip()
        elif attribute == "rtcp":
            rtcp = rest.strip()
    encodings: list[tuple[int, tuple[str, int, int]]] = []
    for payload_type in payload_types:
        resolved = resolve_payload(payload_type, rtpmaps)
        if resolved is not None:
            encodings.append((payload_type, resolved))
    return _Stream(
        media=media,
        port=port,
        proto=proto,
        formats=fields[3],
        payload_types=payload_types,
        encodings=tuple(encodings),
        fmtps=tuple(fmtps.items()),
        cryptos=tuple(cryptos),
        direction=_direction_of(section[1:]),
        ptime=ptime,
        rtcp=rtcp,
    )


def _direction_of(lines: list[SdpLine]) -> str | None:
    for _, raw in lines:
        if raw[0] == "a" and raw[2:] in _ANSWER_DIRECTION:
            return raw[2:]
    return None
