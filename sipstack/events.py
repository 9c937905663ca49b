"""Events the UAC core reports, as frozen dataclasses named for what happened.

Lifecycle events (`state` set) go out to schedulers as DialEvents; every leg produces exactly
one terminal lifecycle event (LegFailed, LegCancelled or LegEnded), which carries its CDR and
says how the call ended (disposition, hangup_reason, hangup_by, final_status_code and the
Reason's protocol/cause/text, read from that CDR): a ring timeout and an operator's cancel
both end as `cancelled` 487, with disposition no_answer and cancelled respectively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason, Outcome
from sipstack.transport import Address


@dataclass(frozen=True, slots=True, kw_only=True)
class LegEvent:
    call_id: str
    correlation_id: str
    scenario: str
    at: float
    status_code: int | None = None
    reason: str = ""

    state: ClassVar[str] = ""
    terminal: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteSent(LegEvent):
    state: ClassVar[str] = "invited"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionalReceived(LegEvent):
    state: ClassVar[str] = "provisional"
    has_sdp: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyMediaReceived(LegEvent):
    """The first 1xx with SDP of an early dialog (a 183 Session Progress, usually): media may
    flow before the answer. Once per early dialog (To tag); it follows that 1xx's
    ProvisionalReceived."""

    state: ClassVar[str] = "early_media"
    to_tag: str = ""
    reliable: bool = False  # it came with Require: 100rel (and was PRACKed)


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRetried(LegEvent):
    """The INVITE was sent again on the same leg (a new transaction, CSeq + 1) because the far
    end asked for an extension we then added (a 421 requiring 100rel, RFC 3262 §4)."""

    state: ClassVar[str] = "invited"
    extension: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirected(LegEvent):
    """A 3xx to our INVITE was followed: a new INVITE went to `target` (RFC 3261 §8.1.3.4).
    Its state is "invited": the leg is inviting again."""

    state: ClassVar[str] = "invited"
    target: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogEstablished(LegEvent):
    state: ClassVar[str] = "established"
    codec: str | None = None
    remote_rtp: Address | None = None
    srtp_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LegTerminated(LegEvent):
    """The one terminal event of a leg: its CDR, and how the call ended read from it (the
    fields are views of the CDR, so the event and the record can never disagree)."""

    terminal: ClassVar[bool] = True
    cdr: CdrRecord

    @property
    def outcome(self) -> Outcome:
        return self.cdr.outcome

    @property
    def disposition(self) -> Disposition:
        return self.cdr.disposition

    @property
    def hangup_reason(self) -> HangupReason:
        return self.cdr.hangup_reason

    @property
    def hangup_by(self) -> HangupBy:
        return self.cdr.hangup_by

    @property
    def final_status_code(self) -> int | None:
        return self.cdr.final_status_code

    @property
    def reason_protocol(self) -> str | None:
        return self.cdr.reason_protocol

    @property
    def reason_cause(self) -> int | None:
        return self.cdr.reason_cause

    @property
    def reason_text(self) -> str | None:
        return self.cdr.reason_text

    @property
    def redirects(self) -> tuple[str, ...]:
        """The 3xx Contacts the leg's INVITE followed, in order."""
        return self.cdr.redirects

    @property
    def retry_after(self) -> float | None:
        """The Retry-After of a 503/429 (any final failure carrying one), seconds."""
        return self.cdr.retry_after


@dataclass(frozen=True, slots=True, kw_only=True)
class LegFailed(LegTerminated):
    state: ClassVar[str] = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class LegCancelled(LegTerminated):
    state: ClassVar[str] = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class LegEnded(LegTerminated):
    state: ClassVar[str] = "ended"


TerminalEvent = LegFailed | LegCancelled | LegEnded

LIFECYCLE_STATES = (
    "invited", "provisional", "early_media", "established", "failed", "cancelled", "ended",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerReceived:
    """A 2xx answered the INVITE; the shell runs pre_ack, then confirm_answer or abort_answer."""

    call_id: str
    correlation_id: str
    status_code: int
    sdp: bytes
    source: Address
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallIdAdopted:
    """The 2xx carried another Call-ID (an SBC rewrote it); the leg is now keyed by the new one."""

    old_call_id: str
    new_call_id: str
    correlation_id: str
    at: float


CoreEvent = LegEvent | AnswerReceived | CallIdAdopted
