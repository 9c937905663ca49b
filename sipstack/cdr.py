"""The call detail record of one leg and the rules that bucket a call's outcome."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class HangupReason(StrEnum):
    """Why a leg ended, bounded. The far end's: from its RFC 3326 Reason header only, none
    meaning normal (sipstack.reason). Ours: the local cause (docs/cdr.md has the table)."""

    NORMAL = "normal"
    USER_HANGUP = "user_hangup"
    TIMER_EXPIRED = "timer_expired"
    ERROR = "error"


class HangupBy(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class Disposition(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"
    CONGESTION = "congestion"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How a call ended: what every terminal event says, and a CDR keeps."""

    disposition: Disposition
    hangup_reason: HangupReason
    hangup_by: HangupBy
    final_status_code: int | None
    reason_protocol: str | None = None  # the Reason (RFC 3326) of the end: ours or theirs
    reason_cause: int | None = None
    reason_text: str | None = None
    retry_after: float | None = None  # seconds, from the final failure's Retry-After

    def as_text(self) -> dict[str, str]:
        """Every field as text (absent: empty), for stream entries and logs."""
        return {
            "disposition": self.disposition.value,
            "hangup_reason": self.hangup_reason.value,
            "hangup_by": self.hangup_by.value,
            "final_status_code": _text(self.final_status_code),
            "reason_protocol": _text(self.reason_protocol),
            "reason_cause": _text(self.reason_cause),
            "reason_text": _text(self.reason_text),
            "retry_after": "" if self.retry_after is None else f"{self.retry_after:g}",
        }


def _text(value: object) -> str:
    return "" if value is None else str(value)


_BUSY = frozenset({486, 600})
_NO_ANSWER = frozenset({408, 480})
_REJECTED = frozenset({403, 603, 607, 608})
_CONGESTION = frozenset({502, 503, 504})


def classify_disposition(
    final_status_code: int | None,
    *,
    cancel_requested: bool = False,
    ring_timeout: bool = False,
) -> Disposition:
    """Bucket a leg's outcome.

    `final_status_code` is the INVITE's final response (None: no final response at all).
    `ring_timeout` wins over `cancel_requested` because our own timer asked for the CANCEL.
    """
    if final_status_code is not None and 200 <= final_status_code < 300:
        return Disposition.ANSWERED
    if ring_timeout:
        return Disposition.NO_ANSWER
    if cancel_requested:
        return Disposition.CANCELLED
    if final_status_code is None:
        return Disposition.CONGESTION
    if final_status_code in _BUSY:
        return Disposition.BUSY
    if final_status_code in _NO_ANSWER:
        return Disposition.NO_ANSWER
    if final_status_code in _REJECTED:
        return Disposition.REJECTED
    if final_status_code in _CONGESTION:
        return Disposition.CONGESTION
    return Disposition.FAILED


def billable_seconds(answered_at: float | None, ended_at: float) -> int:
    """Answered time to the nearest whole second (half up); 0 when never answered.

    Nearest, not every started second, so ACD is not inflated (1.02 s is 1 s); the rounding
    to microseconds first keeps float noise (2.4999999 for 2.5) from deciding.
    """
    if answered_at is None or ended_at <= answered_at:
        return 0
    return math.floor(round(ended_at - answered_at, 6) + 0.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrRecord:
    """One ended leg. Times are epoch seconds (the `now` the core was given)."""

    call_id: str
    correlation_id: str
    scenario: str
    trunk: str
    from_uri: str
    to_uri: str
    started_at: float
    first_provisional_at: float | None  # the first 1xx other than 100 Trying (hop-by-hop)
    answered_at: float | None
    ended_at: float
    final_status_code: int | None
    disposition: Disposition
    hangup_reason: HangupReason
    hangup_by: HangupBy
    reason_protocol: str | None = None
    reason_cause: int | None = None
    reason_text: str | None = None
    codec: str | None = None
    srtp: bool = False
    error: str | None = None
    # The Retry-After (RFC 3261 §20.33) of the final failure, seconds: a 503's or 429's tells
    # the back-pressure (workers.coordination.backpressure) how long the trunk wants less.
    retry_after: float | None = None
    redirects: tuple[str, ...] = ()  # the 3xx Contacts followed, in order (cdrs.redirects)

    @property
    def outcome(self) -> Outcome:
        return Outcome(
            disposition=self.disposition,
            hangup_reason=self.hangup_reason,
            hangup_by=self.hangup_by,
            final_status_code=self.final_status_code,
            reason_protocol=self.reason_protocol,
            reason_cause=self.reason_cause,
            reason_text=self.reason_text,
            retry_after=self.retry_after,
        )

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.ended_at - self.started_at) * 1000))

    @property
    def billsec(self) -> int:
        return billable_seconds(self.answered_at, self.ended_at)
