"""REGISTER client for one trunk binding (RFC 3261 §10), sans-IO: bytes and `now` in, bytes out.

`Registration` keeps one Contact bound at a registrar: it sends REGISTER, answers 401/407
digest challenges (sipstack.auth), raises its Expires to Min-Expires on 423, refreshes before
the binding runs out, and after a failure tries again with exponential back-off. The
transport is the caller's: feed `receive(data, source, now)`, send `outgoing()`, call
`handle_timer(now)` at `next_deadline()`.

Retransmission (Timer E/F) is the existing non-INVITE client transaction of
sipstack.transactions, driven by its own `TransactionLayer` and timer heap; this module is its
transaction user.

Decisions where the RFCs leave room:
- One Call-ID and From tag for the binding's lifetime, CSeq +1 per REGISTER (§10.2 SHOULD).
- Refresh at granted + max(expires / 2, expires - REFRESH_LEAD): half-way for short bindings,
  REFRESH_LEAD (32 s, one Timer F) before the end for long ones.
- The granted expiry is our Contact's `expires` in the 200, else its Expires header, else
  what we asked for (§10.2.4); a 200 that grants 0 for our Contact is a failure.
- Back-off after a failure: min(retry_max, retry_base * 2**(failures-1)), times a random
  factor in [0.5, 1] (RFC 5626 §4.5 shape) from the injected rng, so trunks do not march.
- Credentials rejected (a second challenge without stale=true) are a failure like any
  other: retried after back-off, since a registrar's database may be fixed in the meantime.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from sipstack.auth import DigestChallenge, DigestSession, choose_challenge
from sipstack.config import TimerConfig
from sipstack.core_output import CoreStats, Outgoing
from sipstack.dial import Credentials
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.headers._syntax import parse_delta_seconds
from sipstack.headers.contact import Contact
from sipstack.message import Request, Response, parse_message
from sipstack.timers import TimerHandle, TimerHeap
from sipstack.transactions import ClientTransaction, TransactionLayer
from sipstack.transport import Address, Transport
from sipstack.uac_build import IdGenerator
from sipstack.uri import SipUri, parse_uri

REFRESH_LEAD = 32.0
MAX_AUTH_TRIES = 3
MAX_INTERVAL_RAISES = 3


class RegState(StrEnum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is in flight (first, refresh or retry)
    REGISTERED = "registered"  # bound; a refresh is scheduled
    BACKING_OFF = "backing_off"  # the last attempt failed; a retry is scheduled
    UNREGISTERING = "unregistering"  # REGISTER with Expires: 0 in flight
    STOPPED = "stopped"  # unbound (or given up on by stop()); nothing scheduled


class RegInput(StrEnum):
    START = "start"
    ACCEPTED = "2xx"
    RETRY_NOW = "401/407/423 answered at once"
    FAILED = "failure, timeout or transport error"
    REFRESH_DUE = "refresh timer"
    RETRY_DUE = "back-off timer"
    STOP = "stop"


_S, _I = RegState, RegInput
# The whole state machine; anything else is LocalProtocolError (ours) or ignored (theirs).
TRANSITIONS: dict[tuple[RegState, RegInput], RegState] = {
    (_S.IDLE, _I.START): _S.REGISTERING,
    (_S.IDLE, _I.STOP): _S.STOPPED,
    (_S.REGISTERING, _I.ACCEPTED): _S.REGISTERED,
    (_S.REGISTERING, _I.RETRY_NOW): _S.REGISTERING,
    (_S.REGISTERING, _I.FAILED): _S.BACKING_OFF,
    (_S.REGISTERING, _I.STOP): _S.UNREGISTERING,
    (_S.REGISTERED, _I.REFRESH_DUE): _S.REGISTERING,
    (_S.REGISTERED, _I.STOP): _S.UNREGISTERING,
    (_S.BACKING_OFF, _I.RETRY_DUE): _S.REGISTERING,
    (_S.BACKING_OFF, _I.STOP): _S.STOPPED,
    (_S.UNREGISTERING, _I.ACCEPTED): _S.STOPPED,
    (_S.UNREGISTERING, _I.RETRY_NOW): _S.UNREGISTERING,
    (_S.UNREGISTERING, _I.FAILED): _S.STOPPED,
    (_S.UNREGISTERING, _I.STOP): _S.UNREGISTERING,  # stop() is idempotent (worker drain)
    (_S.STOPPED, _I.STOP): _S.STOPPED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationConfig:
    """One binding: `aor` (To/From), `contact` (ours), where to send, and the timings."""

    registrar: str  # Request-URI, e.g. "sip:carrier.example"
    aor: str  # "sip:trunk-user@carrier.example"
    contact: str  # "sip:trunk-user@203.0.113.5:5060"
    address: Address  # the registrar's (or outbound proxy's) resolved address
    transport: Transport = Transport.UDP
    via_sent_by: str = "127.0.0.1:5060"  # our host:port for Via
    credentials: Credentials | None = None
    expires: int = 3600
    retry_base: float = 30.0
    retry_max: float = 1800.0
    user_agent: str = "outbound/0.1"

    def __post_init__(self) -> None:
        for name in ("registrar", "aor", "contact"):
            text = getattr(self, name)
            try:
                uri = parse_uri(text)
            except SipParseError as error:
                raise ValueError(f"RegistrationConfig.{name}: {error}") from None
            if not isinstance(uri, SipUri):
                raise ValueError(f"RegistrationConfig.{name}: {text!r} is not a sip:/sips: URI")
        if type(self.expires) is not int or not 1 <= self.expires <= 2**32 - 1:
            raise ValueError(f"RegistrationConfig.expires: {self.expires!r} is not 1..2**32-1 s")
        if not 0 < self.retry_base <= self.retry_max:
            raise ValueError(
                f"RegistrationConfig.retry_base/retry_max: need 0 < {self.retry_base}"
                f" <= {self.retry_max}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    aor: str
    expires: int  # granted seconds
    refresh_at: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    aor: str
    status: int | None  # the final status, None for a timeout or transport error
    reason: str
    retry_at: float | None  # None: no retry (after stop())
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered:
    aor: str
    status: int | None  # 200, or what the registrar said / None when it never answered
    at: float


RegistrationEvent = Registered | RegistrationFailed | Unregistered


def refresh_delay(expires: int) -> float:
    """Seconds after a grant of `expires` at which to refresh it."""
    return max(expires / 2, expires - REFRESH_LEAD)


def backoff_delay(failures: int, base: float, maximum: float, rng: random.Random) -> float:
    """The wait before retry number `failures` (1 for the first)."""
    if failures < 1:
        raise ValueError(f"back-off: failures must be at least 1, not {failures}")
    ceiling = min(maximum, base * (1 << min(failures - 1, 32)))
    return ceiling * rng.uniform(0.5, 1.0)


class Registration:
    """The REGISTER client of one binding; see the module docstring."""

    def __init__(
        self,
        config: RegistrationConfig,
        *,
        timers: TimerConfig | None = None,
        rng: random.Random | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        self.config = config
        self.state = RegState.IDLE
        self.stats = CoreStats()
        self.failures = 0
        self.granted: int | None = None
        self._rng = rng if rng is not None else random.Random()
        self._ids = ids if ids is not None else IdGenerator()
        self._heap = TimerHeap()
        self._outgoing: list[Outgoing] = []
        self._events: list[RegistrationEvent] = []
        self._layer = TransactionLayer(
            timers=timers or TimerConfig(),
            heap=self._heap,
            user=self,
            outgoing=self._outgoing,
            stats=self.stats,
        )
        host = config.via_sent_by.rsplit(":", 1)[0]
        self.call_id = self._ids.call_id(host.strip("[]"))
        self._from_tag = self._ids.tag()
        self._cseq = 0
        self._expires = config.expires  # what we ask for (raised by 423)
        self._auth = (
            None
            if config.credentials is None
            else DigestSession(
                config.credentials.username,
                config.credentials.password,
                realm=config.credentials.realm,
            )
        )
        self._challenges: dict[str, DigestChallenge] = {}
        self._auth_tries = 0
        self._interval_raises = 0
        self._tx: ClientTransaction | None = None
        self._timer: TimerHandle | None = None
        self._contact_uri = SipUri.parse(config.contact)

    # -- the API ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._step(RegInput.START)
        self._send_register(now)

    def stop(self, now: float) -> None:
        """Unbind (REGISTER with Expires: 0) when bound or binding; else just stop.

        Calling it again while unbinding, or once stopped, changes nothing."""
        before = self.state
        self._step(RegInput.STOP)
        self._cancel_timer()
        if self.state is RegState.UNREGISTERING and before is not RegState.UNREGISTERING:
            self._abandon_tx()
            self._auth_tries = 0
            self._send_register(now)

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """A message from the registrar; bad bytes are counted, never raised."""
        self.stats.messages_received += 1
        try:
            message = parse_message(data)
        except SipParseError:
            self.stats.parse_errors += 1
            return
        if not isinstance(message, Response):
            self.stats.unsupported_requests += 1
            return
        branch = message.via_branch
        try:
            method = message.cseq[1]
        except SipParseError:
            self.stats.rejected_messages += 1
            return
        tx = None if branch is None else self._layer.find(branch, method)
        if tx is None:
            self.stats.stray_responses += 1
            return
        self._layer.receive_response(tx, message, source, now)

    def handle_timer(self, now: float) -> None:
        self._heap.run_due(now)

    def next_deadline(self) -> float | None:
        return self._heap.next_deadline()

    def outgoing(self) -> list[Outgoing]:
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def events(self) -> list[RegistrationEvent]:
        out = list(self._events)
        self._events.clear()
        return out

    # -- TransactionUser ----------------------------------------------------------------------

    def on_transaction_response(
        self, transaction: ClientTransaction, response: Response, source: Address, now: float
    ) -> None:
        if transaction is not self._tx or response.status_code < 200:
            return
        self._tx = None
        code = response.status_code
        if 200 <= code < 300:
            self._accepted(response, now)
        elif code in (401, 407):
            self._challenged(response, now)
        elif code == 423:
            self._interval_too_brief(response, now)
        else:
            self._failed(code, f"{code} {response.reason}", now)

    def on_transaction_timeout(self, transaction: ClientTransaction, now: float) -> None:
        if transaction is self._tx:
            self._tx = None
            self._failed(None, "no response (Timer F)", now)

    def on_transaction_transport_error(self, transaction: ClientTransaction, now: float) -> None:
        if transaction is self._tx:
            self._tx = None
            self._failed(None, "transport error", now)

    def build_failure_ack(self, transaction: ClientTransaction, response: Response) -> bytes:
        raise LocalProtocolError("REGISTER is not an INVITE: no ACK to build")

    # -- responses ----------------------------------------------------------------------------

    def _accepted(self, response: Response, now: float) -> None:
        self._auth_tries = 0
        self._interval_raises = 0
        if self.state is RegState.UNREGISTERING:
            self._step(RegInput.ACCEPTED)
            self.granted = None
            self._events.append(
                Unregistered(aor=self.config.aor, status=response.status_code, at=now)
            )
            return
        granted = self._granted_expires(response)
        if granted is None or granted == 0:
            self._failed(response.status_code, "200 without a binding for our Contact", now)
            return
        self._step(RegInput.ACCEPTED)
        self.failures = 0
        self.granted = granted
        refresh_at = now + refresh_delay(granted)
        self._arm(refresh_at, RegInput.REFRESH_DUE)
        self._events.append(
            Registered(aor=self.config.aor, expires=granted, refresh_at=refresh_at, at=now)
        )

    def _granted_expires(self, response: Response) -> int | None:
        values = response.headers_all("Contact")
        if not values:
            return self._expires_of(response)
        for value in values:
            try:
                contacts = Contact.parse_all(value)
            except SipParseError:
                return None
            for contact in contacts:
                if contact.uri == self._contact_uri:
                    own = contact.expires
                    return own if own is not None else self._expires_of(response)
        return None  # bindings listed, none of them ours

    def _expires_of(self, response: Response) -> int | None:
        text = response.header("Expires")
        if text is None:
            return self._expires
        try:
            return parse_delta_seconds(text.strip(), "Expires", "value")
        except SipParseError:
            return None

    def _challenged(self, response: Response, now: float) -> None:
        code = response.status_code
        proxy = code == 407
        challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        answer_header = "Proxy-Authorization" if proxy else "Authorization"
        if self._auth is None:
            self._failed(code, f"{code} challenge and no credentials", now)
            return
        if self._auth_tries >= MAX_AUTH_TRIES:
            self._failed(code, f"still challenged ({code}) after {self._auth_tries} answers", now)
            return
        try:
            challenge = choose_challenge(
                response.headers_all(challenge_header), realm=self._auth.realm
            )
        except SipParseError as error:
            self._failed(code, f"authentication failed: {error}", now)
            return
        if self._auth_tries and answer_header in self._challenges and not challenge.stale:
            self._failed(code, f"credentials for realm {challenge.realm!r} were rejected", now)
            return
        self._challenges[answer_header] = challenge
        self._auth_tries += 1
        self.stats.auth_retries += 1
        self._retry_now(now)

    def _interval_too_brief(self, response: Response, now: float) -> None:
        text = response.header("Min-Expires")
        try:
            minimum = (
                None if text is None else parse_delta_seconds(text.strip(), "Min-Expires", "value")
            )
        except SipParseError as error:
            self._failed(423, str(error), now)
            return
        if (
            minimum is None
            or minimum <= self._expires
            or self._interval_raises >= MAX_INTERVAL_RAISES
        ):
            self._failed(423, f"423 with Min-Expires {text!r} after asking {self._expires}", now)
            return
        self._interval_raises += 1
        self._expires = minimum
        self._retry_now(now)

    def _retry_now(self, now: float) -> None:
        self._step(RegInput.RETRY_NOW)
        self._send_register(now)

    def _failed(self, status: int | None, reason: str, now: float) -> None:
        self._auth_tries = 0
        self._interval_raises = 0
        if self.state is RegState.UNREGISTERING:
            self._step(RegInput.FAILED)
            self._events.append(Unregistered(aor=self.config.aor, status=status, at=now))
            return
        self._step(RegInput.FAILED)
        self.failures += 1
        self.granted = None
        retry_at = now + backoff_delay(
            self.failures, self.config.retry_base, self.config.retry_max, self._rng
        )
        self._arm(retry_at, RegInput.RETRY_DUE)
        self._events.append(
            RegistrationFailed(
                aor=self.config.aor, status=status, reason=reason, retry_at=retry_at, at=now
            )
        )

    # -- sending ------------------------------------------------------------------------------

    def _send_register(self, now: float) -> None:
        config = self.config
        self._cseq += 1
        branch = self._ids.branch()
        expires = 0 if self.state is RegState.UNREGISTERING else self._expires
        headers = [
            ("Via", f"{config.transport.via_token} {config.via_sent_by};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{config.aor}>;tag={self._from_tag}"),
            ("To", f"<{config.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<{config.contact}>"),
            ("Expires", str(expires)),
            ("User-Agent", config.user_agent),
        ]
        if self._auth is not None:
            for header, challenge in self._challenges.items():
                try:
                    value = self._auth.authorize(challenge, method="REGISTER", uri=config.registrar)
                except (LocalProtocolError, SipParseError):
                    continue  # sent without; the next challenge decides
                headers.append((header, value))
        data = Request("REGISTER", config.registrar, headers).to_bytes()
        self._tx = self._layer.start(
            method="REGISTER",
            branch=branch,
            data=data,
            transport=config.transport,
            address=config.address,
            owner=self,
            now=now,
        )

    # -- state and timers ---------------------------------------------------------------------

    def _step(self, event: RegInput) -> None:
        next_state = TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise LocalProtocolError(f"REGISTER {self.config.aor}: {event} in state {self.state}")
        self.state = next_state

    def _arm(self, when: float, event: RegInput) -> None:
        self._cancel_timer()
        self._timer = self._heap.schedule(when, self._on_timer, event)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _abandon_tx(self) -> None:
        if self._tx is not None:
            self._layer.abandon(self._tx)
            self._tx = None

    def _on_timer(self, event: RegInput, now: float) -> None:
        self._timer = None
        self._step(event)
        self._send_register(now)
