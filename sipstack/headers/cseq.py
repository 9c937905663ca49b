"""CSeq values (RFC 3261 §20.16): sequence number below 2**31 and a method token."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.headers._syntax import TOKEN_RE, shorten

MAX_CSEQ = 2**31 - 1
_CSEQ_RE = re.compile(r"[ \t]*([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str  # case-sensitive, as SIP methods are

    @classmethod
    def parse(cls, text: str) -> CSeq:
        match = _CSEQ_RE.fullmatch(text)
        if match is None:
            raise SipParseError(_diagnose(text))
        number = int(match.group(1))
        if number > MAX_CSEQ:
            raise SipParseError(f"CSeq: sequence number {number} exceeds 2**31-1")
        return cls(number, match.group(2))

    def render(self) -> str:
        return f"{self.number} {self.method}"

    def __str__(self) -> str:
        return self.render()


def _diagnose(text: str) -> str:
    parts = text.split()
    if not parts:
        return "CSeq: empty value"
    if not parts[0].isascii() or not parts[0].isdigit():
        return f"CSeq: sequence number {shorten(parts[0], 20)} is not a number"
    if len(parts[0]) > 10:
        return f"CSeq: sequence number {shorten(parts[0], 20)} exceeds 2**31-1"
    if len(parts) == 1:
        return "CSeq: missing method"
    if len(parts) > 2:
        return f"CSeq: unexpected text after the method in {shorten(text, 40)}"
    if TOKEN_RE.fullmatch(parts[1]) is None:
        return f"CSeq: method {shorten(parts[1], 20)} is not a token"
    return f"CSeq: malformed value {shorten(text, 40)}"
