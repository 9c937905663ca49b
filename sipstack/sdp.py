"""SDP offers and answers (RFC 4566 / RFC 3264), signalling only."""

from __future__ import annotations

from dataclasses import dataclass


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
