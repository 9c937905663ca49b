"""sipstack: a sans-IO SIP user agent client core (bytes and `now` in, bytes and deadlines out)."""

from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.config import CoreConfig, TimerConfig
from sipstack.core_output import CoreStats, Outgoing
from sipstack.dial import Credentials, DialRequest, DialTarget, Scenario
from sipstack.dialog import DialogSnapshot
from sipstack.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SipParseError,
    UnknownLegError,
)
from sipstack.events import (
    AnswerReceived,
    CallIdAdopted,
    CoreEvent,
    DialogEstablished,
    EarlyMediaReceived,
    InviteRetried,
    InviteSent,
    LegCancelled,
    LegEnded,
    LegEvent,
    LegFailed,
    ProvisionalReceived,
    Redirected,
    TerminalEvent,
)
from sipstack.message import Request, Response, make_response, parse_message
from sipstack.reason import LocalHangup
from sipstack.transport import Address, Transport
from sipstack.uac import UacCore

__all__ = [
    "Address",
    "AnswerReceived",
    "CallIdAdopted",
    "CdrRecord",
    "CoreConfig",
    "CoreEvent",
    "CoreStats",
    "Credentials",
    "DialRequest",
    "DialTarget",
    "DialogEstablished",
    "DialogSnapshot",
    "Disposition",
    "EarlyMediaReceived",
    "HangupBy",
    "HangupReason",
    "InviteRetried",
    "InviteSent",
    "LegCancelled",
    "LegEnded",
    "LegEvent",
    "LegFailed",
    "LocalHangup",
    "LocalProtocolError",
    "Outgoing",
    "ProvisionalReceived",
    "Redirected",
    "RemoteProtocolError",
    "Request",
    "Response",
    "Scenario",
    "SipParseError",
    "TerminalEvent",
    "TimerConfig",
    "Transport",
    "UacCore",
    "UnknownLegError",
    "make_response",
    "parse_message",
]
