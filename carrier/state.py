"""The carrier simulator's per-call and per-transaction state, and its counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

from carrier.config import Outcome
from carrier.sdp import AudioOffer
from sipstack.message import Request
from sipstack.timers import TimerHandle
from sipstack.transport import Address, Transport


class InviteTxState(Enum):
    """RFC 3261 §17.2.1 server INVITE transaction, with RFC 6026's Accepted state."""

    PROCEEDING = "proceeding"  # 1xx sent, final pending
    COMPLETED = "completed"  # non-2xx final sent, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK for the non-2xx arrived; absorbing stragglers until Timer I
    ACCEPTED = "accepted"  # 2xx sent; retransmitted until the ACK (by the UAS core, §13.3.1.4)


class CallState(Enum):
    RINGING = "ringing"
    ANSWERED = "answered"  # 200 sent, no ACK yet
    CONFIRMED = "confirmed"
    ENDING = "ending"  # our BYE is out


@dataclass(slots=True, eq=False)
class InviteServerTx:
    branch: str
    request: Request
    transport: Transport
    peer: Address
    state: InviteTxState = InviteTxState.PROCEEDING
    last_response: bytes = b""
    response_headers: list[tuple[str, str]] | None = None  # Via..CSeq copied once, To apart
    call: CarrierCall | None = None
    acked: bool = False
    retransmit_interval: float = 0.0
    retransmit_timer: TimerHandle | None = None
    end_timer: TimerHandle | None = None  # Timer H / L: give up waiting for the ACK

    @property
    def cseq_number(self) -> int:
        return self.request.cseq[0]


@dataclass(slots=True, eq=False)
class ByeClientTx:
    """Our own BYE: retransmitted (Timer E) until a final response or Timer F."""

    branch: str
    call: CarrierCall
    data: bytes
    retransmit_interval: float
    retransmit_timer: TimerHandle | None = None
    timeout_timer: TimerHandle | None = None


@dataclass(slots=True, eq=False)
class CarrierCall:
    """One dialog (or would-be dialog) with a caller, keyed by Call-ID."""

    call_id: str
    transport: Transport
    peer: Address
    local_tag: str
    remote_tag: str
    local_party: str  # the INVITE's To value with our tag: From of our requests
    remote_party: str  # the INVITE's From value: To of our requests
    remote_target: str  # Contact URI of the INVITE: Request-URI of our requests
    route_set: list[str]
    outcome: Outcome
    invite_tx: InviteServerTx
    started_at: float
    remote_cseq: int
    local_cseq: int = 0
    state: CallState = CallState.RINGING
    offer: AudioOffer | None = None  # None: the INVITE had no SDP (we offer in the 200)
    answer_sdp: bytes = b""
    supports_timer: bool = False
    session_interval: int | None = None
    pending_2xx: InviteServerTx | None = None  # the (re-)INVITE whose 200 awaits its ACK
    final_timer: TimerHandle | None = None
    hold_timer: TimerHandle | None = None
    session_timer: TimerHandle | None = None
    bye_tx: ByeClientTx | None = None


@dataclass(slots=True)
class CarrierStats:
    """Counters of the simulator; `outcomes()` is the summary printed on exit."""

    calls: int = 0  # INVITEs that started a call (after any digest challenge)
    answered: int = 0
    busy: int = 0
    rejected: int = 0
    no_answer: int = 0  # 480 after max_ring
    cancelled: int = 0  # 487 after the caller's CANCEL
    challenged: int = 0  # 401 sent
    auth_failed: int = 0  # 403 sent for a wrong Authorization
    not_acceptable: int = 0  # 488: no usable audio in the offer
    caller_hangups: int = 0  # the caller's BYE ended an answered call
    carrier_hangups: int = 0  # our BYE after --hold
    session_expired: int = 0  # our BYE because no session refresh came
    ack_timeouts: int = 0  # our BYE because the 200 was never ACKed
    bye_timeouts: int = 0  # our BYE got no final response
    session_refreshes: int = 0
    in_dialog_requests: int = 0
    unknown_dialog: int = 0  # 481 sent
    messages_received: int = 0
    messages_sent: int = 0
    retransmissions: int = 0  # our responses/requests sent again by timers
    retransmissions_received: int = 0
    parse_errors: int = 0
    stray_messages: int = 0

    def outcomes(self) -> dict[str, int]:
        keys = ("calls", "answered", "busy", "rejected", "no_answer", "cancelled", "challenged",
                "auth_failed", "not_acceptable", "caller_hangups", "carrier_hangups",
                "session_expired", "ack_timeouts", "bye_timeouts")
        return {key: getattr(self, key) for key in keys}

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
