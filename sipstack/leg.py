"""One outbound leg's state: the INVITE in flight, cancel/answer/teardown progress and timers."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from sipstack.cdr import HangupBy, HangupReason
from sipstack.dial import Credentials
from sipstack.errors import LocalProtocolError
from sipstack.outstanding import OutstandingRequest
from sipstack.transport import Address, Transport

if TYPE_CHECKING:
    from sipstack.auth import DigestChallenge, DigestSession
    from sipstack.dialog import Dialog
    from sipstack.message import Request
    from sipstack.prack import ReliableProvisionals
    from sipstack.reason import ReasonValue
    from sipstack.sdp import Codec
    from sipstack.timers import TimerHandle
    from sipstack.transactions import ClientTransaction


class LegPhase(Enum):
    CALLING = "calling"  # INVITE sent, no provisional response yet
    RINGING = "ringing"  # a 1xx arrived
    ANSWERED = "answered"  # a 2xx arrived; waiting for confirm_answer / abort_answer
    ESTABLISHED = "established"  # ACK sent
    ENDING = "ending"  # our BYE is out, waiting for its final response

    @property
    def answered(self) -> bool:
        return self in _ANSWERED_PHASES


_ANSWERED_PHASES = frozenset({LegPhase.ANSWERED, LegPhase.ESTABLISHED, LegPhase.ENDING})


class LegInput(Enum):
    """What moves a leg from one phase to the next."""

    PROVISIONAL = "a 1xx to the INVITE"
    INVITE_RESENT = "the INVITE went again (credentials, a raised interval)"
    ANSWER = "a 2xx to the INVITE"
    CONFIRMED = "pre_ack passed: the 2xx is ACKed"
    HANGING_UP = "our BYE goes out"
    RECOVERED_ANSWERED = "a dead process's answered leg, taken over"
    RECOVERED_RINGING = "a dead process's unanswered leg, taken over"
    FINISHED = "the terminal event went out"


_P = LegPhase
_L = LegInput
# (phase, input) -> next phase: the only moves a leg makes, in one place (as transactions.py
# does for transactions). A pair missing here is a bug in the core: LocalProtocolError.
# FINISHED keeps the phase (how far the leg got stays readable) and marks the leg ended.
LEG_TABLE: dict[tuple[LegPhase, LegInput], LegPhase] = {
    (_P.CALLING, _L.PROVISIONAL): _P.RINGING,
    (_P.RINGING, _L.PROVISIONAL): _P.RINGING,
    (_P.CALLING, _L.INVITE_RESENT): _P.CALLING,
    (_P.RINGING, _L.INVITE_RESENT): _P.CALLING,
    (_P.CALLING, _L.ANSWER): _P.ANSWERED,
    (_P.RINGING, _L.ANSWER): _P.ANSWERED,
    (_P.ANSWERED, _L.CONFIRMED): _P.ESTABLISHED,
    (_P.ANSWERED, _L.HANGING_UP): _P.ENDING,
    (_P.ESTABLISHED, _L.HANGING_UP): _P.ENDING,
    (_P.CALLING, _L.RECOVERED_ANSWERED): _P.ESTABLISHED,
    (_P.CALLING, _L.RECOVERED_RINGING): _P.RINGING,
    **{(phase, _L.FINISHED): phase for phase in LegPhase},
}


class Ending:
    """How a leg we are tearing down will be recorded once the teardown finishes."""

    __slots__ = ("ended_at", "error", "event_reason", "hangup_by", "hangup_reason", "reason_value")

    def __init__(
        self,
        *,
        hangup_reason: HangupReason,
        hangup_by: HangupBy,
        event_reason: str,
        error: str | None = None,
        reason_value: ReasonValue | None = None,
        ended_at: float | None = None,
    ) -> None:
        # When the call ended for the CDR: the moment we sent our BYE (its outcome, up to
        # Timer F later, does not lengthen the call); None: when the leg is finished.
        self.ended_at = ended_at
        self.hangup_reason = hangup_reason
        self.hangup_by = hangup_by
        self.event_reason = event_reason
        self.error = error
        self.reason_value = reason_value


class UnackedResponse:
    """Our final response to a peer's INVITE, resent over UDP until its ACK: a 2xx per
    §13.3.1.4, a failure per Timer G (§17.2.1); `until` is Timer H (64*T1)."""

    __slots__ = ("address", "cseq", "data", "interval", "timer", "transport", "until")

    def __init__(
        self,
        *,
        cseq: int,
        data: bytes,
        transport: Transport,
        address: Address,
        interval: float,
        until: float,
    ) -> None:
        self.cseq = cseq
        self.data = data
        self.transport = transport
        self.address = address
        self.interval = interval
        self.until = until
        self.timer: TimerHandle | None = None


class Leg:
    """Everything the core keeps about one leg; heavy INVITE parts are freed once answered."""

    __slots__ = (
        "_ended",
        "_phase",
        "ack_data",
        "address",
        "answer_timer",
        "answered_at",
        "auth",
        "auth_challenges",
        "bye",
        "call_id",
        "call_id_adopted",
        "cancel_by_ring_timeout",
        "cancel_requested",
        "cancel_sent",
        "cancel_timer",
        "cancel_tx",
        "codec",
        "contact",
        "correlation_id",
        "credentials",
        "dialog",
        "duration_timer",
        "early_sdp",
        "ending",
        "final_status_code",
        "first_provisional_at",
        "first_request_uri",
        "from_header",
        "from_tag",
        "from_uri",
        "invite",
        "invite_cseq",
        "invite_head",
        "invite_tail",
        "invite_via",
        "local_sdp",
        "lost_connection",
        "max_duration",
        "min_se",
        "offer_body",
        "offer_session_expires",
        "pending_reinvite",
        "prack_cseq",
        "prack_on",
        "recovered",
        "redirects",
        "refresh",
        "refresh_failure",
        "refresh_method",
        "reinvite_ack",
        "reinvite_request",
        "reinvite_tx",
        "reliable",
        "remote_rtp",
        "remote_tag",
        "request_uri",
        "retry_after",
        "ring_timer",
        "scenario",
        "session_codec",
        "session_expires_at",
        "session_interval",
        "session_timer",
        "srtp",
        "srtp_key",
        "started_at",
        "to_header",
        "to_uri",
        "transport",
        "trunk",
        "udp_only",
        "via_prefix",
        "we_refresh",
    )

    def __init__(
        self,
        *,
        call_id: str,
        credentials: Credentials | None,
        max_duration: float | None,
        correlation_id: str,
        scenario: str,
        trunk: str,
        transport: Transport,
        address: Address,
        via_prefix: str,
        request_uri: str,
        from_header: str,
        from_tag: str,
        from_uri: str,
        to_header: str,
        to_uri: str,
        started_at: float,
    ) -> None:
        self.call_id = call_id
        self.call_id_adopted = False  # an SBC's Call-ID: the dialog's Call-ID is not ours (§14.1)
        self.credentials = credentials  # for challenges to the INVITE, BYE and UPDATE
        self.max_duration = max_duration
        self.correlation_id = correlation_id
        self.scenario = scenario
        self.trunk = trunk
        self.transport = transport
        self.address = address
        self.via_prefix = via_prefix  # "SIP/2.0/UDP host:port": a Via minus its parameters
        self.request_uri = request_uri
        self.from_header = from_header
        self.from_tag = from_tag
        self.from_uri = from_uri
        self.to_header = to_header  # without tag
        self.to_uri = to_uri
        self.started_at = started_at
        self._phase = LegPhase.CALLING
        self._ended = False
        self.recovered = False
        # The connection the leg relied on broke: its CANCEL or BYE went again on a new one.
        self.lost_connection = False

        self.invite_cseq = 1
        self.invite_via = ""
        self.invite = OutstandingRequest("INVITE")
        self.invite_head: tuple[tuple[str, str], ...] | None = None
        self.invite_tail: tuple[tuple[str, str], ...] | None = None
        self.offer_body = b""
        self.local_sdp = b""  # the last SDP we sent in this session (offer or answer)
        self.offer_session_expires: int | None = None
        self.srtp_key: str | None = None
        self.auth: DigestSession | None = None
        # The latest challenge per answer header ("Authorization", "Proxy-Authorization"):
        # every later request of the leg answers them with a fresh nc (§22.3).
        self.auth_challenges: dict[str, DigestChallenge] | None = None

        self.first_provisional_at: float | None = None
        self.answered_at: float | None = None
        self.final_status_code: int | None = None
        self.retry_after: float | None = None  # the Retry-After of the final failure, seconds
        self.redirects: tuple[str, ...] = ()  # the 3xx Contacts followed (RFC 3261 §8.1.3.4)
        self.reliable: ReliableProvisionals | None = None  # RFC 3262 RSeq per early dialog
        self.prack_cseq = 0  # the CSeq of our last PRACK (the confirmed dialog continues)
        self.prack_on = False  # this leg's INVITE offers 100rel (a 421 asked for it)
        self.udp_only = False  # requests over 1300 bytes stay on UDP (RFC 3261 §18.1.1)
        self.first_request_uri = ""  # the dialled Request-URI once a redirect replaced it
        # The SDP of a reliable-less 18x, per early dialog (To tag): a 2xx without a body takes
        # the answer its own dialog gave, never another fork's (RFC 3264 §4).
        self.early_sdp: dict[str, bytes] | None = None

        self.cancel_requested = False
        self.cancel_by_ring_timeout = False
        self.cancel_sent = False
        self.cancel_tx: ClientTransaction | None = None

        self.dialog: Dialog | None = None
        self.remote_tag = ""
        self.ack_data: bytes | None = None
        self.codec: str | None = None
        self.session_codec: Codec | None = None  # the answer's voice codec, kept by re-offers
        self.remote_rtp: Address | None = None
        self.srtp = False
        self.ending: Ending | None = None
        self.contact = ""
        self.bye = OutstandingRequest("BYE")

        self.session_interval: int | None = None
        self.session_expires_at: float | None = None  # the last refresh + the interval
        self.we_refresh = False
        self.min_se = 90  # RFC 4028 Min-SE of the dialog: ours, raised by any 422
        self.refresh_method = "UPDATE"  # "INVITE" once the peer shows it takes no UPDATE
        self.refresh = OutstandingRequest("UPDATE")  # or the re-INVITE that refreshes
        self.refresh_failure: str | None = None  # a refresh failed; the session runs out
        self.pending_reinvite: UnackedResponse | None = None
        # Our last re-INVITE: its request (for the ACK of a failure) and the ACK of its 2xx.
        self.reinvite_tx: ClientTransaction | None = None
        self.reinvite_request: Request | None = None
        self.reinvite_ack: bytes | None = None

        self.ring_timer: TimerHandle | None = None
        self.cancel_timer: TimerHandle | None = None
        self.answer_timer: TimerHandle | None = None
        self.duration_timer: TimerHandle | None = None
        self.session_timer: TimerHandle | None = None

    @property
    def state(self) -> LegPhase:
        return self._phase

    @property
    def ended(self) -> bool:
        """The terminal event went out: the leg is gone for everyone but late responses."""
        return self._ended

    def advance(self, event: LegInput) -> LegPhase:
        """The one place a leg's phase changes (LEG_TABLE)."""
        if self._ended:
            raise LocalProtocolError(f"leg {self.call_id} already ended: {event.value}")
        next_phase = LEG_TABLE.get((self._phase, event))
        if next_phase is None:
            raise LocalProtocolError(
                f"leg {self.call_id}: {event.value} is not accepted in phase {self._phase.value}"
            )
        self._phase = next_phase
        if event is LegInput.FINISHED:
            self._ended = True
        return next_phase

    def stop_timers(self) -> None:
        for handle in (
            self.ring_timer,
            self.cancel_timer,
            self.answer_timer,
            self.duration_timer,
            self.session_timer,
        ):
            if handle is not None:
                handle.cancel()
        self.ring_timer = self.cancel_timer = self.answer_timer = None
        self.duration_timer = self.session_timer = None
        pending = self.pending_reinvite
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        self.pending_reinvite = None

    @property
    def invite_branch(self) -> str:
        """The branch of the INVITE in flight (or last sent), read from its Via."""
        _, found, rest = self.invite_via.partition(";branch=")
        return rest.split(";", 1)[0] if found else ""

    def free_invite_parts(self) -> None:
        """Drop what only the INVITE phase needs (templates, early SDP)."""
        self.invite_head = None
        self.invite_tail = None
        self.early_sdp = None

    def __repr__(self) -> str:
        return f"<Leg {self.call_id} {self.state.value}{' ended' if self.ended else ''}>"
