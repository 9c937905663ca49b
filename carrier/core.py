"""The carrier simulator's UAS, sans-IO: bytes + source + now in, bytes + deadlines out.

Longer than 500 lines on purpose: `CarrierCore` is one state machine (a call's INVITE
server transaction, its scripted outcome, the dialog's in-dialog requests and timers) whose
methods share the per-call state; the parts that stand alone already live beside it
(carrier.auth, carrier.sdp, carrier.state, carrier.config).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Protocol, cast

from carrier.auth import AuthVerdict
from carrier.config import (
    ACK_TIMEOUT_REASON,
    NO_ANSWER_STATUS,
    REJECTION_STATUS,
    SESSION_EXPIRED_REASON,
    CarrierConfig,
    Outcome,
    OutcomePicker,
    session_refresh_deadline,
)
from carrier.sdp import AudioOffer, UnacceptableOffer, build_answer, parse_audio_offer
from carrier.state import (
    ByeClientTx,
    CallState,
    CarrierCall,
    CarrierStats,
    InviteServerTx,
    InviteTxState,
)
from sipstack.core_output import Outgoing
from sipstack.errors import SipParseError
from sipstack.headers.name_addr import NameAddr
from sipstack.message import Request, Response, parse_message
from sipstack.timers import TimerHandle, TimerHeap
from sipstack.transport import Address, Transport
from sipstack.uri import format_host

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
IN_DIALOG_OK = frozenset({"UPDATE", "OPTIONS", "INFO"})
FIRST_RTP_PORT = 20000
MIN_SE = 90  # RFC 4028 §4: the smallest session interval we accept

AnswerKey = tuple[str, str, int, str]  # Call-ID, branch, CSeq number, method


class Authenticator(Protocol):
    """Digest challenges for `--challenge` (carrier.auth.DigestAuthenticator)."""

    def challenge(self, now: float, *, stale: bool = False) -> str:
        """A WWW-Authenticate value with a fresh nonce."""
        ...

    def check(self, request: Request, now: float) -> AuthVerdict:
        """Whether the request's Authorization answers one of our nonces correctly."""
        ...


class CarrierCore:
    """Many simultaneous calls of a simulated far end; no sockets and no clock of its own."""

    def __init__(
        self,
        config: CarrierConfig,
        *,
        rng: random.Random | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        if config.challenge and authenticator is None:
            raise ValueError("config.challenge needs an authenticator")
        self.config = config
        self.stats = CarrierStats()
        self._rng = rng if rng is not None else random.Random()
        self._picker = OutcomePicker(config.weights, self._rng)
        self._auth = authenticator if config.challenge else None
        self._timers = TimerHeap()
        self._outgoing: list[Outgoing] = []
        self._calls: dict[str, CarrierCall] = {}
        self._invite_txs: dict[str, InviteServerTx] = {}
        self._bye_txs: dict[str, ByeClientTx] = {}
        # Responses of non-INVITE server transactions, resent for retransmitted requests (Timer J).
        self._answered: dict[AnswerKey, bytes] = {}
        self._rtp_port = FIRST_RTP_PORT
        self._now = 0.0
        t = config.timers
        self._t1, self._t2, self._t4, self._timeout = t.t1, t.t2, t.t4, t.timer_b

    # ---- the shell's interface -------------------------------------------------------------

    def receive(self, data: bytes, source: Address, transport: Transport, now: float) -> None:
        """Handle one message from the network. Bad bytes are counted, never raised."""
        self._now = now
        self.stats.messages_received += 1
        try:
            message = parse_message(data)
        except SipParseError:
            self.stats.parse_errors += 1
            return
        try:
            if isinstance(message, Request):
                self._on_request(message, source, transport)
            else:
                self._on_response(message)
        except ValueError:  # SipParseError and RemoteProtocolError included: a header was bad
            self.stats.parse_errors += 1
            if isinstance(message, Request) and message.method != "ACK":
                self._respond(message, 400, transport, source)

    def handle_timer(self, now: float) -> None:
        self._now = now
        self._timers.run_due(now)

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def outgoing(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        return out

    def connection_lost(self, transport: Transport, peer: Address) -> None:
        """A TCP connection closed: its calls cannot be reached any more, so they are dropped."""
        lost = [c for c in self._calls.values() if c.transport is transport and c.peer == peer]
        for call in lost:
            self._end_call(call)

    def set_local_address(self, address: Address) -> None:
        """Where we say we are (Via, Contact): known only once the socket is bound."""
        self.config = dataclasses.replace(self.config, local_address=address)

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    # ---- sending -----------------------------------------------------------------------------

    def _send(self, data: bytes, transport: Transport, address: Address) -> None:
        self.stats.messages_sent += 1
        self._outgoing.append(Outgoing(data, transport, address))

    def _respond(
        self,
        request: Request,
        status: int,
        transport: Transport,
        source: Address,
        *,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        remember: bool = True,
    ) -> bytes:
        data = render_response(
            request, copied_headers(request), status, to_tag, headers or [], body
        )
        self._send(data, transport, source)
        if remember and request.method not in ("INVITE", "ACK"):
            self._remember_answer(request, data, transport)
        return data

    def _remember_answer(self, request: Request, data: bytes, transport: Transport) -> None:
        if transport.is_connection_oriented:
            return  # reliable transports do not retransmit requests (Timer J is 0)
        key = _request_key(request)
        self._answered[key] = data
        self._schedule(self._timeout, self._forget_answer, key)

    def _forget_answer(self, key: object, _now: float) -> None:
        self._answered.pop(cast(AnswerKey, key), None)

    def _schedule(
        self, delay: float, callback: Callable[[object, float], None], arg: object = None
    ) -> TimerHandle:
        return self._timers.schedule(self._now + delay, callback, arg)

    # ---- requests ----------------------------------------------------------------------------

    def _on_request(self, request: Request, source: Address, transport: Transport) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        if method == "INVITE":
            tx = self._invite_txs.get(_branch_key(request))
            if tx is not None:
                self.stats.retransmissions_received += 1
                if tx.last_response:
                    self._send(tx.last_response, tx.transport, tx.peer)
            elif request.to_tag:
                self._on_in_dialog(request, source, transport)
            else:
                self._on_new_invite(request, source, transport)
            return
        cached = self._answered.get(_request_key(request))
        if cached is not None:
            self.stats.retransmissions_received += 1
            self._send(cached, transport, source)
        elif method == "CANCEL":
            self._on_cancel(request, source, transport)
        elif request.to_tag:
            self._on_in_dialog(request, source, transport)
        elif method == "OPTIONS":
            self._respond(request, 200, transport, source, headers=self._capabilities())
        elif method == "BYE":
            self.stats.unknown_dialog += 1
            self._respond(request, 481, transport, source)
        else:
            self._respond(request, 405, transport, source, headers=[("Allow", ALLOW)])

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "timer"),
                ("Server", self.config.user_agent)]

    def _on_new_invite(self, request: Request, source: Address, transport: Transport) -> None:
        tx = InviteServerTx(_branch_key(request), request, transport, source)
        self._invite_txs[tx.branch] = tx
        if self._refused(tx):
            return
        offer: AudioOffer | None = None
        if request.body.strip():
            try:
                offer = parse_audio_offer(request.body)
            except UnacceptableOffer:
                self.stats.not_acceptable += 1
                self._final_non2xx(tx, 488)
                return
        call = self._new_call(request, tx, source, transport)
        call.offer = offer
        self.stats.calls += 1
        tx.call = call
        self._calls[call.call_id] = call
        self._send(self._tx_response(tx, 100, None), transport, source)
        tx.last_response = self._render_invite_response(call, tx, 180)
        self._send(tx.last_response, transport, source)
        delay = self.config.max_ring if call.outcome is Outcome.NO_ANSWER else self.config.ring
        if delay == 0:
            self._send_final(call)
        else:
            call.final_timer = self._schedule(delay, self._final_due, call)

    def _refused(self, tx: InviteServerTx) -> bool:
        """Answer a new INVITE we will not take with its final response; True when refused."""
        request = tx.request
        if (request.call_id or "") in self._calls:
            # Same Call-ID, another branch, no To tag: a merged request (RFC 3261 §8.2.2.2).
            self._final_non2xx(tx, 482)
            return True
        unsupported = [
            option for option in request.headers_all("require") if option.lower() != "timer"
        ]
        if unsupported:
            # RFC 3261 §8.2.2.3: an extension the caller requires and we lack (100rel, ...).
            self._final_non2xx(tx, 420, [("Unsupported", ", ".join(unsupported))])
            return True
        if self._interval_too_small(request):
            self._final_non2xx(tx, 422, [("Min-SE", str(MIN_SE))])
            return True
        if self._auth is None:
            return False
        verdict = self._auth.check(request, self._now)
        if verdict is AuthVerdict.ACCEPTED:
            return False
        if verdict is AuthVerdict.REJECTED:
            self.stats.auth_failed += 1
            self._final_non2xx(tx, 403)
        else:
            self.stats.challenged += 1
            challenge = self._auth.challenge(self._now, stale=verdict is AuthVerdict.STALE)
            self._final_non2xx(tx, 401, [("WWW-Authenticate", challenge)])
        return True

    def _new_call(
        self, request: Request, tx: InviteServerTx, source: Address, transport: Transport
    ) -> CarrierCall:
        contact = request.header("contact")
        remote_target = str(NameAddr.parse(contact, "Contact").uri) if contact else request.uri
        local_tag = f"{self._rng.getrandbits(48):012x}"
        supported = {v.lower() for v in request.headers_all("supported")}
        return CarrierCall(
            call_id=request.call_id or "",
            transport=transport,
            peer=source,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_party=f"{request.header('to')};tag={local_tag}",
            remote_party=request.header("from") or "",
            remote_target=remote_target,
            route_set=request.headers_all("record-route"),
            outcome=self._picker.pick(),
            invite_tx=tx,
            started_at=self._now,
            remote_cseq=request.cseq[0],
            supports_timer="timer" in supported,
        )

    def _render_invite_response(
        self,
        call: CarrierCall,
        tx: InviteServerTx,
        status: int,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> bytes:
        headers = [("Record-Route", v) for v in call.route_set]
        headers.append(("Contact", self._contact(call.transport)))
        if extra:
            headers.extend(extra)
        return self._tx_response(tx, status, call.local_tag, headers, body)

    def _tx_response(
        self,
        tx: InviteServerTx,
        status: int,
        to_tag: str | None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> bytes:
        if tx.response_headers is None:
            tx.response_headers = copied_headers(tx.request)
        return render_response(tx.request, tx.response_headers, status, to_tag, headers or [], body)

    def _contact(self, transport: Transport) -> str:
        host, port = self.config.local_address
        host_text = format_host(host)
        suffix = "" if transport is Transport.UDP else f";transport={transport.value}"
        scheme = "sips" if transport.is_tls else "sip"
        return f"<{scheme}:carrier@{host_text}:{port}{suffix}>"

    def _final_due(self, call: object, now: float) -> None:
        assert isinstance(call, CarrierCall)
        call.final_timer = None
        if self._calls.get(call.call_id) is call and call.state is CallState.RINGING:
            self._send_final(call)

    def _send_final(self, call: CarrierCall) -> None:
        if call.outcome is Outcome.ANSWER:
            self.stats.answered += 1
            self._answer(call, call.invite_tx)
            return
        if call.outcome is Outcome.NO_ANSWER:
            self.stats.no_answer += 1
            status = NO_ANSWER_STATUS
        else:
            if call.outcome is Outcome.BUSY:
                self.stats.busy += 1
            else:
                self.stats.rejected += 1
            status = REJECTION_STATUS[call.outcome]
        self._end_call(call)
        self._final_non2xx(call.invite_tx, status, to_tag=call.local_tag)

    # ---- INVITE server transaction -----------------------------------------------------------

    def _final_non2xx(
        self,
        tx: InviteServerTx,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        *,
        to_tag: str | None = None,
    ) -> None:
        if to_tag is None:
            to_tag = f"{self._rng.getrandbits(48):012x}"
        tx.state = InviteTxState.COMPLETED
        tx.last_response = self._tx_response(tx, status, to_tag, headers)
        self._send(tx.last_response, tx.transport, tx.peer)
        self._start_response_retransmits(tx)
        tx.end_timer = self._schedule(self._timeout, self._invite_tx_timeout, tx)

    def _start_response_retransmits(self, tx: InviteServerTx) -> None:
        if tx.transport.is_connection_oriented:
            return
        tx.retransmit_interval = self._t1
        tx.retransmit_timer = self._schedule(self._t1, self._retransmit_response, tx)

    def _retransmit_response(self, tx: object, now: float) -> None:
        assert isinstance(tx, InviteServerTx)
        self.stats.retransmissions += 1
        self._send(tx.last_response, tx.transport, tx.peer)
        tx.retransmit_interval = min(tx.retransmit_interval * 2, self._t2)
        tx.retransmit_timer = self._schedule(tx.retransmit_interval, self._retransmit_response, tx)

    def _stop_retransmits(self, tx: InviteServerTx) -> None:
        if tx.retransmit_timer is not None:
            tx.retransmit_timer.cancel()
            tx.retransmit_timer = None

    def _invite_tx_timeout(self, tx: object, now: float) -> None:
        """Timer H (non-2xx never ACKed) or the end of the 2xx wait (Timer L / 64*T1)."""
        assert isinstance(tx, InviteServerTx)
        self._stop_retransmits(tx)
        self._invite_txs.pop(tx.branch, None)
        call = tx.call
        if (
            tx.state is InviteTxState.ACCEPTED
            and not tx.acked
            and call is not None
            and call.pending_2xx is tx
            and self._calls.get(call.call_id) is call
        ):
            # RFC 3261 §13.3.1.4: a 2xx never ACKed ends the dialog with a BYE.
            call.pending_2xx = None
            self.stats.ack_timeouts += 1
            self._send_bye(call, ACK_TIMEOUT_REASON)

    def _forget_tx_later(self, tx: InviteServerTx) -> None:
        if tx.end_timer is not None:
            tx.end_timer.cancel()
        delay = 0.0 if tx.transport.is_connection_oriented else self._t4
        tx.end_timer = self._schedule(delay, self._forget_tx, tx)

    def _forget_tx(self, tx: object, _now: float) -> None:
        assert isinstance(tx, InviteServerTx)
        self._invite_txs.pop(tx.branch, None)

    # ---- answering ---------------------------------------------------------------------------

    def _answer(self, call: CarrierCall, tx: InviteServerTx) -> None:
        if not call.answer_sdp:
            self._rtp_port = FIRST_RTP_PORT + (self._rtp_port - FIRST_RTP_PORT + 2) % 40000
            call.answer_sdp = build_answer(
                call.offer,
                host=self.config.local_address[0],
                rtp_port=self._rtp_port,
                session_id=self._rng.getrandbits(31),
                rng=self._rng,
            )
        extra = [("Allow", ALLOW), ("Supported", "timer"), ("Content-Type", "application/sdp")]
        extra.extend(self._session_timer_headers(call, tx.request))
        call.state = CallState.ANSWERED if tx is call.invite_tx else call.state
        tx.state = InviteTxState.ACCEPTED
        tx.last_response = self._render_invite_response(call, tx, 200, extra, call.answer_sdp)
        call.pending_2xx = tx
        self._send(tx.last_response, tx.transport, tx.peer)
        self._start_response_retransmits(tx)
        tx.end_timer = self._schedule(self._timeout, self._invite_tx_timeout, tx)

    def _interval_too_small(self, request: Request) -> bool:
        """RFC 4028 §8.1: with session timers on, an interval below our Min-SE gets 422."""
        offered = _offered_interval(request)
        return self.config.session_expires is not None and offered is not None \
            and offered < MIN_SE

    def _session_timer_headers(self, call: CarrierCall, request: Request) -> list[tuple[str, str]]:
        configured = self.config.session_expires
        if configured is None:
            return []
        interval = configured
        offered = _offered_interval(request)
        if offered is not None and MIN_SE <= offered < interval:
            interval = offered
        call.session_interval = interval
        headers = [("Session-Expires", f"{interval};refresher=uac")]
        if call.supports_timer:
            headers.append(("Require", "timer"))
        return headers

    def _on_ack(self, ack: Request) -> None:
        tx = self._invite_txs.get(_branch_key(ack))
        if tx is not None and tx.state in (InviteTxState.COMPLETED, InviteTxState.CONFIRMED):
            if tx.state is InviteTxState.COMPLETED:
                tx.state = InviteTxState.CONFIRMED
                self._stop_retransmits(tx)
                self._forget_tx_later(tx)
            else:
                self.stats.retransmissions_received += 1
            return
        call = self._calls.get(ack.call_id or "")
        pending = call.pending_2xx if call is not None else None
        if call is None or pending is None or ack.to_tag != call.local_tag:
            self.stats.stray_messages += 1  # a late or retransmitted ACK: absorbed
            return
        if ack.cseq[0] != pending.cseq_number:
            self.stats.stray_messages += 1
            return
        pending.acked = True
        call.pending_2xx = None
        self._stop_retransmits(pending)
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            if self.config.hold is not None:
                call.hold_timer = self._schedule(self.config.hold, self._hold_over, call)
        if call.state is CallState.CONFIRMED:
            self._restart_session_timer(call)

    def _hold_over(self, call: object, now: float) -> None:
        assert isinstance(call, CarrierCall)
        call.hold_timer = None
        if self._calls.get(call.call_id) is call and call.state is CallState.CONFIRMED:
            self.stats.carrier_hangups += 1
            self._send_bye(call, self.config.remote_hangup_reason)

    def _restart_session_timer(self, call: CarrierCall) -> None:
        if call.session_interval is None:
            return
        if call.session_timer is not None:
            call.session_timer.cancel()
        delay = session_refresh_deadline(call.session_interval)
        call.session_timer = self._schedule(delay, self._session_expired, call)

    def _session_expired(self, call: object, now: float) -> None:
        assert isinstance(call, CarrierCall)
        call.session_timer = None
        if self._calls.get(call.call_id) is call and call.state is CallState.CONFIRMED:
            self.stats.session_expired += 1
            self._send_bye(call, SESSION_EXPIRED_REASON)

    # ---- CANCEL and in-dialog requests -------------------------------------------------------

    def _on_cancel(self, cancel: Request, source: Address, transport: Transport) -> None:
        tx = self._invite_txs.get(_branch_key(cancel))
        if tx is None or tx.request.call_id != cancel.call_id:
            self.stats.unknown_dialog += 1
            self._respond(cancel, 481, transport, source)
            return
        call = tx.call
        self._respond(cancel, 200, transport, source, to_tag=call.local_tag if call else None)
        if tx.state is InviteTxState.PROCEEDING and call is not None:
            self.stats.cancelled += 1
            self._end_call(call)
            self._final_non2xx(tx, 487, to_tag=call.local_tag)

    def _on_in_dialog(self, request: Request, source: Address, transport: Transport) -> None:
        call = self._calls.get(request.call_id or "")
        if (
            call is None
            or request.to_tag != call.local_tag
            or request.from_tag != call.remote_tag
        ):
            self.stats.unknown_dialog += 1
            self._respond(request, 481, transport, source)
            return
        self.stats.in_dialog_requests += 1
        number = request.cseq[0]
        if number < call.remote_cseq:
            self._respond(request, 500, transport, source, headers=[("Retry-After", "0")])
            return
        call.remote_cseq = number
        method = request.method
        if method == "BYE":
            self._respond(request, 200, transport, source)
            if call.invite_tx.state is InviteTxState.PROCEEDING:
                self._end_call(call)
                self._final_non2xx(call.invite_tx, 487, to_tag=call.local_tag)
                return
            if call.state is not CallState.ENDING:
                self.stats.caller_hangups += 1
            self._end_call(call)
        elif method == "INVITE":
            self._on_reinvite(call, request, source, transport)
        elif method in IN_DIALOG_OK:
            headers: list[tuple[str, str]] = []
            if method == "UPDATE" and self._interval_too_small(request):
                self._respond(request, 422, transport, source, headers=[("Min-SE", str(MIN_SE))])
                return
            if method == "UPDATE" and call.state is CallState.CONFIRMED:
                headers = self._session_timer_headers(call, request)
                self._note_refresh(call)
            self._respond(request, 200, transport, source, headers=headers)
        else:
            self._respond(request, 405, transport, source, headers=[("Allow", ALLOW)])

    def _note_refresh(self, call: CarrierCall) -> None:
        if call.session_interval is not None:
            self.stats.session_refreshes += 1
            self._restart_session_timer(call)

    def _on_reinvite(
        self, call: CarrierCall, request: Request, source: Address, transport: Transport
    ) -> None:
        tx = InviteServerTx(_branch_key(request), request, transport, source, call=call)
        self._invite_txs[tx.branch] = tx
        if call.state is not CallState.CONFIRMED or call.pending_2xx is not None:
            self._final_non2xx(tx, 491, to_tag=call.local_tag)
            return
        self._answer(call, tx)
        self._note_refresh(call)

    # ---- our BYE -----------------------------------------------------------------------------

    def _send_bye(self, call: CarrierCall, reason: str | None) -> None:
        self._cancel_call_timers(call)
        call.state = CallState.ENDING
        call.local_cseq += 1
        branch = f"z9hG4bK{self._rng.getrandbits(64):016x}"
        host, port = self.config.local_address
        host_text = format_host(host)
        headers = [
            ("Via", f"{call.transport.via_token} {host_text}:{port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", call.local_party),
            ("To", call.remote_party),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.local_cseq} BYE"),
        ]
        # The UAS's route set is the Record-Route list in the order received (RFC 3261 §12.1.1).
        headers.extend(("Route", route) for route in call.route_set)
        if reason:
            headers.append(("Reason", reason))
        headers.append(("User-Agent", self.config.user_agent))
        data = Request("BYE", call.remote_target, headers).to_bytes()
        tx = ByeClientTx(branch, call, data, self._t1)
        call.bye_tx = tx
        self._bye_txs[branch] = tx
        self._send(data, call.transport, call.peer)
        if not call.transport.is_connection_oriented:
            tx.retransmit_timer = self._schedule(self._t1, self._retransmit_bye, tx)
        tx.timeout_timer = self._schedule(self._timeout, self._bye_timed_out, tx)

    def _retransmit_bye(self, tx: object, now: float) -> None:
        assert isinstance(tx, ByeClientTx)
        self.stats.retransmissions += 1
        self._send(tx.data, tx.call.transport, tx.call.peer)
        tx.retransmit_interval = min(tx.retransmit_interval * 2, self._t2)
        tx.retransmit_timer = self._schedule(tx.retransmit_interval, self._retransmit_bye, tx)

    def _bye_timed_out(self, tx: object, now: float) -> None:
        assert isinstance(tx, ByeClientTx)
        self.stats.bye_timeouts += 1
        self._finish_bye(tx)

    def _finish_bye(self, tx: ByeClientTx) -> None:
        for timer in (tx.retransmit_timer, tx.timeout_timer):
            if timer is not None:
                timer.cancel()
        self._bye_txs.pop(tx.branch, None)
        if self._calls.get(tx.call.call_id) is tx.call:
            self._end_call(tx.call)

    def _on_response(self, response: Response) -> None:
        tx = self._bye_txs.get(response.via_branch or "")
        if tx is None or response.cseq[1] != "BYE":
            self.stats.stray_messages += 1
            return
        if response.status_code >= 200:
            self._finish_bye(tx)

    # ---- bookkeeping -------------------------------------------------------------------------

    def _cancel_call_timers(self, call: CarrierCall) -> None:
        for name in ("final_timer", "hold_timer", "session_timer"):
            timer: TimerHandle | None = getattr(call, name)
            if timer is not None:
                timer.cancel()
                setattr(call, name, None)

    def _end_call(self, call: CarrierCall) -> None:
        self._cancel_call_timers(call)
        if call.pending_2xx is not None:
            self._stop_retransmits(call.pending_2xx)
            call.pending_2xx = None
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]


def copied_headers(request: Request) -> list[tuple[str, str]]:
    """What every response copies from its request (RFC 3261 §8.2.6.2), To left out: Via lines,
    From, Call-ID, CSeq. Looked up by name, which is cheaper than make_response's full scan."""
    copied = [("Via", via) for via in request.headers_all("via")]
    copied.append(("From", request.header("from") or ""))
    copied.append(("Call-ID", request.call_id or ""))
    copied.append(("CSeq", request.header("cseq") or ""))
    return copied


def render_response(
    request: Request,
    copied: list[tuple[str, str]],
    status: int,
    to_tag: str | None,
    headers: list[tuple[str, str]],
    body: bytes,
) -> bytes:
    to = request.header("to") or ""
    if to_tag is not None and request.to_tag is None:
        to = f"{to};tag={to_tag}"
    return Response(status, None, [*copied, ("To", to), *headers], body).to_bytes()


def _request_key(request: Request) -> AnswerKey:
    return (request.call_id or "", _branch_key(request), request.cseq[0], request.method)


def _offered_interval(request: Request) -> int | None:
    value = request.header("session-expires")
    if value is None:
        return None
    number = value.split(";", 1)[0].strip()
    return int(number) if number.isdigit() and number.isascii() else None


def _branch_key(request: Request) -> str:
    """The top Via branch; RFC 2543 peers without one are matched by Call-ID and CSeq number."""
    branch = request.via_branch
    if branch:
        return branch
    return f"rfc2543:{request.call_id}:{request.cseq[0]}"
