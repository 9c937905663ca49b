"""Reliable provisional responses (RFC 3262, 100rel): RSeq/RAck values and the UAC's rule for
which reliable 1xx to PRACK.

Pure helpers for the INVITE flow to call; nothing here sends or times anything. The PRACK
itself is an ordinary in-dialog non-INVITE request (its retransmission is its transaction's).

RFC 3262 §4, per early dialog (the To tag of the 1xx, since forks number independently):
the first reliable 1xx sets the sequence number; a later one is acknowledged and processed
only when its RSeq is exactly one higher. An equal or lower RSeq is a retransmission of one
already acknowledged (our PRACK, or its retransmission, is on the way): ignored. A higher
one leaves a gap: not acknowledged, not processed (the UAS retransmits the missing one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sipstack.errors import RemoteProtocolError, SipParseError
from sipstack.headers._syntax import TOKEN_RE
from sipstack.message import Response
from sipstack.uri import shorten

OPTION_TAG = "100rel"
MAX_RSEQ = 2**32 - 1  # RFC 3262 §7.1: 1*DIGIT, 0 to 2**32-1; the first is at most 2**31-1
_DIGITS_RE = re.compile(r"[0-9]{1,10}")


def parse_rseq(value: str) -> int:
    """An RSeq header value; SipParseError names a value that is not 1..2**32-1."""
    text = value.strip()
    if _DIGITS_RE.fullmatch(text) is None or not 1 <= int(text) <= MAX_RSEQ:
        raise SipParseError(f"RSeq: {shorten(text, 30)} is not a number 1..2**32-1")
    return int(text)


@dataclass(frozen=True, slots=True)
class RAck:
    """RFC 3262 §7.2: `RAck: <rseq> <cseq number> <method>` of the response acknowledged."""

    rseq: int
    cseq: int
    method: str

    def __post_init__(self) -> None:
        if not 1 <= self.rseq <= MAX_RSEQ:
            raise ValueError(f"RAck rseq {self.rseq} is not 1..2**32-1")
        if not 0 <= self.cseq <= MAX_RSEQ:
            raise ValueError(f"RAck cseq {self.cseq} is not 0..2**32-1")
        if TOKEN_RE.fullmatch(self.method) is None:
            raise ValueError(f"RAck method {self.method!r} is not a token")

    def render(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"

    @classmethod
    def parse(cls, value: str) -> RAck:
        parts = value.split()
        if len(parts) != 3:
            raise SipParseError(f"RAck: {shorten(value, 40)} is not '<rseq> <cseq> <method>'")
        rseq = parse_rseq(parts[0])
        if _DIGITS_RE.fullmatch(parts[1]) is None or int(parts[1]) > MAX_RSEQ:
            raise SipParseError(f"RAck: CSeq number {shorten(parts[1], 20)} is not 0..2**32-1")
        if TOKEN_RE.fullmatch(parts[2]) is None:
            raise SipParseError(f"RAck: method {shorten(parts[2], 20)} is not a token")
        return cls(rseq, int(parts[1]), parts[2])


def _option_tags(values: list[str]) -> set[str]:
    return {tag.strip().lower() for value in values for tag in value.split(",") if tag.strip()}


def is_reliable(response: Response) -> bool:
    """A 101-199 response sent reliably: Require carries 100rel (RFC 3262 §3)."""
    return 101 <= response.status_code <= 199 and OPTION_TAG in _option_tags(
        response.headers_all("Require")
    )


def asks_for_100rel(response: Response) -> bool:
    """A 421 (Extension Required) whose Require names 100rel (RFC 3261 §21.4.15, RFC 3262 §4)."""
    return response.status_code == 421 and OPTION_TAG in _option_tags(
        response.headers_all("Require")
    )


def headers_with_100rel(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """An INVITE's headers with 100rel in Supported and Require (each added when missing)."""
    out: list[tuple[str, str]] = []
    seen = {"supported": False, "require": False}
    for name, value in headers:
        key = name.lower()
        if key in seen:
            seen[key] = True
            if OPTION_TAG not in _option_tags([value]):
                value = f"{value}, {OPTION_TAG}" if value.strip() else OPTION_TAG
        out.append((name, value))
    for key, name in (("supported", "Supported"), ("require", "Require")):
        if not seen[key]:
            out.append((name, OPTION_TAG))
    return tuple(out)


def rack_for(response: Response) -> RAck:
    """The RAck of the PRACK answering this reliable 1xx.

    RemoteProtocolError when it is not reliable or carries no usable RSeq or CSeq: a
    reliable 1xx without RSeq cannot be acknowledged and must not be processed.
    """
    if not is_reliable(response):
        raise RemoteProtocolError(
            f"{response.status_code} without Require: 100rel is not a reliable provisional"
        )
    rseq_text = response.header("RSeq")
    if rseq_text is None:
        raise RemoteProtocolError(f"reliable {response.status_code} without an RSeq header")
    try:
        rseq = parse_rseq(rseq_text)
        cseq, method = response.cseq
    except SipParseError as error:
        raise RemoteProtocolError(f"reliable {response.status_code}: {error}") from None
    return RAck(rseq, cseq, method)


class Reliability(StrEnum):
    PRACK = "acknowledge with PRACK and process"
    DUPLICATE = "ignore: already acknowledged (a retransmission)"
    OUT_OF_ORDER = "ignore: an earlier reliable provisional is missing"


@dataclass(frozen=True, slots=True)
class EarlyDialogRSeq:
    """The RSeq of the last in-order reliable 1xx of one early dialog (None: none yet)."""

    last: int | None = None

    def accept(self, rseq: int) -> tuple[Reliability, EarlyDialogRSeq]:
        """RFC 3262 §4: the decision for a reliable 1xx with this RSeq, and the next state."""
        if not 1 <= rseq <= MAX_RSEQ:
            raise ValueError(f"RSeq {rseq} is not 1..2**32-1")
        if self.last is None or rseq == self.last + 1:
            return Reliability.PRACK, EarlyDialogRSeq(rseq)
        if rseq <= self.last:
            return Reliability.DUPLICATE, self
        return Reliability.OUT_OF_ORDER, self


class ReliableProvisionals:
    """Per INVITE: the RSeq state of each early dialog, keyed by the 1xx's To tag."""

    __slots__ = ("_dialogs",)

    def __init__(self) -> None:
        self._dialogs: dict[str, EarlyDialogRSeq] = {}

    def accept(self, to_tag: str, rseq: int) -> Reliability:
        if not to_tag:
            raise ValueError("a reliable provisional needs a To tag (RFC 3262 §3 dialog)")
        decision, state = self._dialogs.get(to_tag, EarlyDialogRSeq()).accept(rseq)
        self._dialogs[to_tag] = state
        return decision

    def last(self, to_tag: str) -> int | None:
        state = self._dialogs.get(to_tag)
        return None if state is None else state.last

    def clear(self) -> None:
        """The final response arrived: the sequence numbers are no longer kept (§4)."""
        self._dialogs.clear()
