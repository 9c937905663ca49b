"""The carrier's SDP answer (RFC 3264): PCMA when offered, DTMF events kept, SRTP answered."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

PREFERRED_PAYLOAD = 8  # PCMA
_STATIC_NAMES = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000", 18: "G729/8000"}


class UnacceptableOffer(ValueError):
    """The offer has no audio stream we can answer (the carrier replies 488)."""


@dataclass(frozen=True, slots=True)
class AudioOffer:
    port: int
    protocol: str
    payload_types: tuple[int, ...]
    rtpmaps: dict[int, str]
    crypto_suite: str | None


def parse_audio_offer(body: bytes) -> AudioOffer:
    """The first audio m-line of an offer, with its rtpmaps and first a=crypto suite."""
    text = body.decode("utf-8", errors="replace")
    audio: AudioOffer | None = None
    in_audio = False
    rtpmaps: dict[int, str] = {}
    crypto: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if audio is not None:
                break
            fields = line[2:].split()
            in_audio = len(fields) >= 4 and fields[0] == "audio"
            if in_audio:
                try:
                    port = int(fields[1].split("/")[0])
                    payloads = tuple(int(p) for p in fields[3:])
                except ValueError:
                    raise UnacceptableOffer(f"malformed audio m-line {line!r}") from None
                audio = AudioOffer(port, fields[2], payloads, rtpmaps, None)
        elif in_audio and line.startswith("a=rtpmap:"):
            number, _, encoding = line[9:].partition(" ")
            if number.isdigit():
                rtpmaps[int(number)] = encoding.strip()
        elif in_audio and line.startswith("a=crypto:") and crypto is None:
            parts = line.split()
            if len(parts) >= 2:
                crypto = parts[1]
    if audio is None:
        raise UnacceptableOffer("the offer has no audio m-line")
    if audio.port == 0 or not audio.payload_types:
        raise UnacceptableOffer("the offer's audio stream is disabled or lists no payload types")
    return AudioOffer(audio.port, audio.protocol, audio.payload_types, rtpmaps, crypto)


def _encoding(offer: AudioOffer, payload_type: int) -> str | None:
    return offer.rtpmaps.get(payload_type) or _STATIC_NAMES.get(payload_type)


def choose_payload(offer: AudioOffer) -> int:
    """PCMA if offered, else the offer's first payload that is not telephone-event."""
    if PREFERRED_PAYLOAD in offer.payload_types:
        return PREFERRED_PAYLOAD
    for payload_type in offer.payload_types:
        encoding = _encoding(offer, payload_type) or ""
        if not encoding.lower().startswith("telephone-event"):
            return payload_type
    raise UnacceptableOffer("the offer lists only telephone-event")


LATE_OFFER = AudioOffer(0, "RTP/AVP", (PREFERRED_PAYLOAD, 101), {101: "telephone-event/8000"}, None)


def build_answer(
    offer: AudioOffer | None, *, host: str, rtp_port: int, session_id: int, rng: random.Random
) -> bytes:
    """An answer to `offer`; with None (an INVITE without SDP) the same SDP serves as offer."""
    if offer is None:
        offer = LATE_OFFER
    chosen = choose_payload(offer)
    payloads = [chosen]
    attributes = [f"a=rtpmap:{chosen} {_encoding(offer, chosen) or 'PCMA/8000'}"]
    for payload_type in offer.payload_types:
        if (_encoding(offer, payload_type) or "").lower().startswith("telephone-event"):
            payloads.append(payload_type)
            attributes.append(f"a=rtpmap:{payload_type} {_encoding(offer, payload_type)}")
            attributes.append(f"a=fmtp:{payload_type} 0-15")
            break
    if offer.crypto_suite is not None:
        key = base64.b64encode(rng.randbytes(30)).decode("ascii")
        attributes.append(f"a=crypto:1 {offer.crypto_suite} inline:{key}")
    address_type = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=carrier {session_id} {session_id} IN {address_type} {host}",
        "s=carrier",
        f"c=IN {address_type} {host}",
        "t=0 0",
        f"m=audio {rtp_port} {offer.protocol} {' '.join(str(p) for p in payloads)}",
        *attributes,
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
