"""Events the UAC core reports, as frozen dataclasses named for what happened.

Lifecycle events (`state` set) go out to schedulers as DialEvents; every leg produces exactly
one terminal lifecycle event (LegFailed, LegCancelled or LegEnded), which carries its CDR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sipstack.cdr import CdrRecord
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
class DialogEstablished(LegEvent):
    state: ClassVar[str] = "established"
    codec: str | None = None
    remote_rtp: Address | None = None
    srtp_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LegFailed(LegEvent):
    state: ClassVar[str] = "failed"
    terminal: ClassVar[bool] = True
    cdr: CdrRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class LegCancelled(LegEvent):
    state: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True
    cdr: CdrRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class LegEnded(LegEvent):
    state: ClassVar[str] = "ended"
    terminal: ClassVar[bool] = True
    cdr: CdrRecord


TerminalEvent = LegFailed | LegCancelled | LegEnded

LIFECYCLE_STATES = ("invited", "provisional", "established", "failed", "cancelled", "ended")


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
