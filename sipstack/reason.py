"""RFC 3326 Reason header values: parse, render, and the hangup class a CDR records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sipstack.cdr import HangupReason
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.headers._syntax import TOKEN_RE, quote, read_quoted, shorten, skip_whitespace

SIP = "SIP"
Q850 = "Q.850"
_CANONICAL_PROTOCOLS = {SIP.lower(): SIP, Q850.lower(): Q850}
_MAX_CAUSE_DIGITS = 9
# An unquoted parameter value: wider than a token so extension values such as hosts still parse.
_BARE_VALUE_RE = re.compile(r'[^\s;,"]+')

_Q850_CLASSES: dict[int, HangupReason] = {
    16: HangupReason.NORMAL,
    17: HangupReason.NORMAL,
    18: HangupReason.NORMAL,
    19: HangupReason.NORMAL,
    21: HangupReason.USER_HANGUP,
    102: HangupReason.TIMER_EXPIRED,
    34: HangupReason.ERROR,
    38: HangupReason.ERROR,
    41: HangupReason.ERROR,
    42: HangupReason.ERROR,
    47: HangupReason.ERROR,
}


@dataclass(frozen=True, slots=True)
class ReasonValue:
    """One reason-value; SIP and Q.850 are stored in their canonical case, others as written."""

    protocol: str
    cause: int | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if TOKEN_RE.fullmatch(self.protocol) is None:
            raise LocalProtocolError(f"Reason protocol {self.protocol!r} is not a token")
        if self.cause is not None and not 0 <= self.cause < 10**_MAX_CAUSE_DIGITS:
            raise LocalProtocolError(f"Reason cause {self.cause} is out of range")
        canonical = _CANONICAL_PROTOCOLS.get(self.protocol.lower())
        if canonical is not None and canonical != self.protocol:
            object.__setattr__(self, "protocol", canonical)

    def render(self) -> str:
        """`Q.850;cause=16;text="Normal call clearing"`."""
        rendered = self.protocol
        if self.cause is not None:
            rendered += f";cause={self.cause}"
        if self.text is not None:
            rendered += f";text={quote(self.text)}"
        return rendered


def render_reason_header(values: Sequence[ReasonValue]) -> str:
    """A whole Reason header value (RFC 3326 allows one value per protocol)."""
    return ", ".join(value.render() for value in values)


def parse_reason_header(value: str) -> list[ReasonValue]:
    """Every reason-value of a Reason header; unknown parameters are ignored."""
    if "\r" in value or "\n" in value:
        raise SipParseError("Reason: header value contains a line break")
    values: list[ReasonValue] = []
    pos = 0
    end = len(value)
    while True:
        pos = _skip_separators(value, pos)
        if pos >= end:
            break
        reason, pos = _parse_one(value, pos)
        values.append(reason)
        pos = skip_whitespace(value, pos)
        if pos < end and value[pos] != ",":
            raise SipParseError(f"Reason: expected ',' at {shorten(value[pos:], 40)}")
    if not values:
        raise SipParseError("Reason: empty header value")
    return values


def _skip_separators(value: str, pos: int) -> int:
    """Past whitespace and the commas of empty list elements (RFC 7230 §7 tolerance)."""
    while pos < len(value) and value[pos] in " \t,":
        pos += 1
    return pos


def _parse_one(value: str, pos: int) -> tuple[ReasonValue, int]:
    match = TOKEN_RE.match(value, pos)
    if match is None:
        raise SipParseError(f"Reason: expected a protocol token at {shorten(value[pos:], 40)}")
    protocol = match.group()
    pos = match.end()
    cause: int | None = None
    text: str | None = None
    seen: set[str] = set()
    while True:
        pos = skip_whitespace(value, pos)
        if pos >= len(value) or value[pos] != ";":
            break
        pos = skip_whitespace(value, pos + 1)
        name_match = TOKEN_RE.match(value, pos)
        if name_match is None:
            raise SipParseError(f"Reason: expected a parameter at {shorten(value[pos:], 40)}")
        name = name_match.group().lower()
        pos = skip_whitespace(value, name_match.end())
        param: str | None = None
        if pos < len(value) and value[pos] == "=":
            param, pos = _parse_param_value(value, skip_whitespace(value, pos + 1))
        if name in seen and name in ("cause", "text"):
            raise SipParseError(f"Reason: {protocol} has {name} twice")
        seen.add(name)
        if name == "cause":
            cause = _parse_cause(protocol, param)
        elif name == "text":
            text = param
    return ReasonValue(protocol, cause, text), pos


def _parse_param_value(value: str, pos: int) -> tuple[str, int]:
    if pos < len(value) and value[pos] == '"':
        return read_quoted(value, pos, "Reason")
    match = _BARE_VALUE_RE.match(value, pos)
    if match is None:
        raise SipParseError(f"Reason: expected a parameter value at {shorten(value[pos:], 40)}")
    return match.group(), match.end()


def _parse_cause(protocol: str, text: str | None) -> int:
    if text is None:
        raise SipParseError(f"Reason: {protocol} cause has no value")
    if not (text.isascii() and text.isdigit()):
        raise SipParseError(f"Reason: {protocol} cause {text!r} is not a number")
    if len(text) > _MAX_CAUSE_DIGITS:
        raise SipParseError(f"Reason: {protocol} cause {shorten(text, 20)} is too long")
    return int(text)


def primary_reason(values: Sequence[ReasonValue]) -> ReasonValue | None:
    """The value the hangup class is taken from: Q.850 with a cause, else SIP with a cause,
    else the first value. Q.850 wins because it says why the far party cleared the call,
    while a SIP code often only says how the request fared."""
    for protocol in (Q850, SIP):
        for value in values:
            if value.protocol == protocol and value.cause is not None:
                return value
    return values[0] if values else None


def classify_reason(values: Sequence[ReasonValue]) -> HangupReason:
    """The bounded hangup class of the reference, from the primary value."""
    primary = primary_reason(values)
    if primary is None or primary.cause is None:
        return HangupReason.NORMAL
    if primary.protocol == Q850:
        return _Q850_CLASSES.get(primary.cause, HangupReason.NORMAL)
    if primary.protocol == SIP:
        if primary.cause == 408:
            return HangupReason.TIMER_EXPIRED
        if primary.cause >= 400:
            return HangupReason.ERROR
    return HangupReason.NORMAL


class LocalHangup(StrEnum):
    """Why we end a call ourselves, for the Reason header of our BYE or CANCEL."""

    NORMAL = "normal"
    RING_TIMEOUT = "ring_timeout"
    MAX_DURATION = "max_duration"
    SESSION_TIMER_EXPIRED = "session_timer_expired"
    ERROR = "error"


_LOCAL_REASONS: dict[LocalHangup, ReasonValue] = {
    LocalHangup.NORMAL: ReasonValue(Q850, 16, "Normal call clearing"),
    LocalHangup.RING_TIMEOUT: ReasonValue(Q850, 19, "No answer from user"),
    LocalHangup.MAX_DURATION: ReasonValue(Q850, 16, "Maximum call duration reached"),
    LocalHangup.SESSION_TIMER_EXPIRED: ReasonValue(Q850, 102, "Recovery on timer expiry"),
    LocalHangup.ERROR: ReasonValue(Q850, 31, "Normal, unspecified"),
}


def reason_for_local_hangup(kind: LocalHangup) -> ReasonValue:
    """The Reason value we put on our BYE or CANCEL for this kind of local hangup."""
    return _LOCAL_REASONS[kind]


SESSION_TIMER_SIP_REASON = ReasonValue(SIP, 408, "Session timer expired")
"""The SIP-protocol companion of SESSION_TIMER_EXPIRED, for peers that read only SIP causes."""
