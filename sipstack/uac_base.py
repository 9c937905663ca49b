"""State and primitives the UAC core's parts share: sending, events, timers, ACK, BYE, leg ends."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sipstack.auth import DigestSession, choose_challenge
from sipstack.cdr import CdrRecord, HangupBy, HangupReason, classify_disposition
from sipstack.config import CoreConfig
from sipstack.core_output import CoreStats, Outgoing
from sipstack.dialog import Dialog, NextHop
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.events import CoreEvent, LegCancelled, LegEnded, LegFailed
from sipstack.headers.session_timer import MinSE
from sipstack.leg import Ending, Leg, LegInput, LegPhase, UnackedResponse
from sipstack.message import Request, Response
from sipstack.outstanding import OutstandingRequest
from sipstack.reason import (
    Q850,
    SESSION_TIMER_SIP_REASON,
    LocalHangup,
    ReasonValue,
    reason_for_local_hangup,
    render_reason_header,
)
from sipstack.timers import TimerHandle, TimerHeap
from sipstack.transactions import ClientTransaction, TransactionLayer, TransactionUser, TxState
from sipstack.transport import Address, Transport
from sipstack.uac_build import IdGenerator, RandomBytes, via_value
from sipstack.uri import format_hostport

ResponseKey = tuple[str, str, str, int]  # Call-ID, top Via branch, method, CSeq number
TerminalEventType = type[LegFailed] | type[LegCancelled] | type[LegEnded]

HANGUP_CLASS: dict[LocalHangup, HangupReason] = {
    LocalHangup.NORMAL: HangupReason.NORMAL,
    LocalHangup.RING_TIMEOUT: HangupReason.TIMER_EXPIRED,
    LocalHangup.MAX_DURATION: HangupReason.NORMAL,
    LocalHangup.SESSION_TIMER_EXPIRED: HangupReason.TIMER_EXPIRED,
    LocalHangup.ERROR: HangupReason.ERROR,
}

CONNECTION_LOST = "connection lost"
# On the BYE (or CANCEL) we send again over a new connection after the old one broke.
CONNECTION_LOST_REASON = ReasonValue(Q850, 31, CONNECTION_LOST)

MAX_AUTH_TRIES = 3  # answers to challenges per request before giving up (stale loops)
_LIVE_INVITE_STATES = frozenset({TxState.CALLING, TxState.PROCEEDING})


class CoreBase:
    """The shared half of UacCore; the INVITE, request and session-timer parts build on it."""

    def __init__(self, config: CoreConfig | None = None, *, random_bytes: RandomBytes = os.urandom):
        self.config = config if config is not None else CoreConfig()
        self.stats = CoreStats()
        self._timer_config = self.config.timers
        self._random_bytes = random_bytes
        self._ids = IdGenerator(random_bytes)
        self._heap = TimerHeap()
        self._outgoing: list[Outgoing] = []
        self._events: list[CoreEvent] = []
        self._legs: dict[str, Leg] = {}
        user: TransactionUser = self  # type: ignore[assignment]  # UacCore implements it
        self._transactions = TransactionLayer(
            timers=self._timer_config,
            heap=self._heap,
            user=user,
            outgoing=self._outgoing,
            stats=self.stats,
            max_detached=self.config.max_remembered,
        )
        # The INVITEs we sent, (Call-ID, From tag, CSeq) -> until when a 2xx to one is ours
        # to ACK and BYE (forks of it included) once no transaction or leg knows it any more.
        self._sent_invites: dict[tuple[str, str, int], float] = {}
        self._sent_responses: dict[ResponseKey, tuple[bytes, Transport, Address]] = {}
        self._orphan_acks: dict[tuple[str, str], tuple[bytes, Transport, Address]] = {}
        # Our failure responses to INVITEs over UDP, resent until their ACK (Timer G / H),
        # keyed by (Call-ID, the INVITE's branch): the ACK of a failure repeats that branch.
        self._unacked_failures: dict[tuple[str, str], UnackedResponse] = {}
        self._via_prefixes = {
            transport: f"{transport.via_token} "
            + format_hostport(*self.config.local_address(transport))
            for transport in Transport
        }

    # -- primitives ---------------------------------------------------------------------------

    def _send(self, data: bytes, transport: Transport, address: Address) -> None:
        self._outgoing.append(Outgoing(data, transport, address))

    def _emit(self, event: CoreEvent) -> None:
        self._events.append(event)

    def _schedule(
        self, when: float, callback: Callable[[Any, float], None], arg: Any
    ) -> TimerHandle:
        return self._heap.schedule(when, callback, arg)

    def _via_for(self, transport: Transport, branch: str) -> str:
        return via_value(self._via_prefixes[transport], branch)

    @staticmethod
    def _fallback_hop(leg: Leg) -> NextHop:
        return NextHop(address=leg.address, transport=leg.transport)

    def _abandon(self, transaction: ClientTransaction | None) -> None:
        if transaction is not None and transaction.state is not TxState.TERMINATED:
            self._transactions.abandon(transaction)

    def _abandon_transactions(self, leg: Leg, *, keep_invite: bool = True) -> None:
        """Stop the leg's transactions; INVITEs (ours, re-INVITE) are left to `_finish` to
        detach unless the connection they need is gone."""
        transactions = [leg.cancel_tx, leg.bye.transaction]
        if not keep_invite:
            transactions += [leg.invite.transaction, leg.refresh.transaction]
        for transaction in transactions:
            self._abandon(transaction)

    # -- in-dialog requests -------------------------------------------------------------------

    def _send_in_dialog(
        self,
        leg: Leg,
        method: str,
        extra_headers: list[tuple[str, str]],
        now: float,
        body: bytes = b"",
    ) -> ClientTransaction:
        return self._start_in_dialog(leg, method, extra_headers, now, body)[0]

    def _start_in_dialog(
        self,
        leg: Leg,
        method: str,
        extra_headers: list[tuple[str, str]],
        now: float,
        body: bytes = b"",
    ) -> tuple[ClientTransaction, Request]:
        """Send a request inside the leg's dialog (next CSeq, new branch); its transaction."""
        dialog = leg.dialog
        if dialog is None:
            raise LocalProtocolError(f"leg {leg.call_id} has no dialog for {method}")
        hop = dialog.next_hop
        branch = self._ids.branch()
        request = dialog.build_request(
            method,
            via=self._via_for(hop.transport, branch),
            cseq=dialog.next_cseq(),
            extra_headers=extra_headers,
            body=body,
        )
        transaction = self._transactions.start(
            method=method,
            branch=branch,
            data=request.to_bytes(),
            transport=hop.transport,
            address=hop.address,
            owner=leg,
            now=now,
        )
        return transaction, request

    def _refresh_target(self, leg: Leg, message: Request | Response) -> None:
        """§12.2: a target refresh request or its 2xx replaces the remote target (Contact)."""
        contact = message.header("contact")
        if contact is not None and leg.dialog is not None:
            leg.dialog.update_remote_target(contact, self._fallback_hop(leg))

    def _raise_min_se(self, leg: Leg, response: Response) -> bool:
        """A 422's Min-SE raises the leg's floor (RFC 4028 §7.4); False when it has none we
        can read."""
        value = response.header("min-se")
        if value is None:
            return False
        try:
            min_se = MinSE.parse(value).delta
        except SipParseError:
            return False
        leg.min_se = max(leg.min_se, min_se)
        return True

    def _stop_refresh(self, leg: Leg, now: float) -> None:
        """No refresh outcome matters any more; a re-INVITE still gets its ACKs (detached)."""
        transaction = leg.refresh.transaction
        leg.refresh.transaction = None
        if transaction is None:
            return
        if transaction.method == "INVITE" and transaction.state in _LIVE_INVITE_STATES:
            self._transactions.detach(transaction, now)
        else:
            self._abandon(transaction)

    def _build_ack_for(
        self, leg: Leg, cseq: int, auth_headers: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        """The ACK of a 2xx to our INVITE or re-INVITE with CSeq `cseq` (§13.2.2.4)."""
        dialog = self._dialog_for(leg)
        hop = dialog.next_hop
        request = dialog.build_request(
            "ACK",
            via=self._via_for(hop.transport, self._ids.branch()),
            cseq=cseq,
            extra_headers=list(auth_headers),
        )
        return request.to_bytes()

    def _build_ack(self, leg: Leg) -> bytes:
        """The ACK for the 2xx (§13.2.2.4): its own branch, the INVITE's CSeq number and creds."""
        return self._build_ack_for(leg, leg.invite_cseq, leg.invite.auth_headers)

    def _send_ack_for(self, leg: Leg, data: bytes) -> None:
        hop = self._dialog_for(leg).next_hop
        self._send(data, hop.transport, hop.address)

    def _send_ack(self, leg: Leg) -> None:
        dialog = leg.dialog
        if dialog is None:
            return
        data = leg.ack_data if leg.ack_data is not None else self._build_ack(leg)
        hop = dialog.next_hop
        self._send(data, hop.transport, hop.address)

    def _start_bye(
        self,
        leg: Leg,
        now: float,
        hangup: LocalHangup,
        *,
        error: str | None = None,
        event_reason: str = "",
        reason_value: ReasonValue | None = None,
    ) -> None:
        """End an answered leg with a BYE carrying a Reason; the leg ends on its outcome."""
        if leg.ended or leg.state is LegPhase.ENDING:
            return
        if leg.state is LegPhase.ANSWERED:
            self._send_ack(leg)  # never leave a 2xx unacknowledged, even when hanging up
        leg.stop_timers()
        self._stop_refresh(leg, now)
        leg.advance(LegInput.HANGING_UP)
        value = reason_value or reason_for_local_hangup(hangup)
        leg.ending = Ending(
            hangup_reason=HANGUP_CLASS[hangup],
            hangup_by=HangupBy.LOCAL,
            event_reason=event_reason or value.text or hangup.value,
            error=error,
            reason_value=value,
            ended_at=now,
        )
        self._send_bye(leg, now)

    def _send_bye(self, leg: Leg, now: float) -> None:
        ending = leg.ending
        values: list[ReasonValue] = []
        if ending is not None and ending.reason_value is not None:
            values.append(ending.reason_value)
            if ending.hangup_reason is HangupReason.TIMER_EXPIRED:
                values.append(SESSION_TIMER_SIP_REASON)
        headers: list[tuple[str, str]] = []
        if values:
            headers.append(("Reason", render_reason_header(values)))
        headers.append(("User-Agent", self.config.user_agent))
        dialog = self._dialog_for(leg)
        leg.bye.auth_headers = self._credentials(
            leg, method="BYE", uri=dialog.request_uri_and_routes()[0]
        )
        headers.extend(leg.bye.auth_headers)
        leg.bye.transaction = self._send_in_dialog(leg, "BYE", headers, now)

    # -- digest -------------------------------------------------------------------------------

    def _answer_challenge(
        self, leg: Leg, request: OutstandingRequest, response: Response
    ) -> str | None:
        """Take a 401/407 to `request`: None when it may go again (the challenge is kept for
        it and the leg's later requests, and its tries counted), else the error text.

        A challenge of a kind the request already answered means rejected credentials, unless
        it says stale=true (§22.2, RFC 7616 §3.3); stale loops stop after MAX_AUTH_TRIES.
        Credentials sent pre-emptively (tries 0) were never asked for, so cannot be rejected.
        """
        code = response.status_code
        tries = request.auth_tries
        credentials = leg.credentials
        if credentials is None:
            return f"authentication failed: {code} challenge and no credentials"
        if tries >= MAX_AUTH_TRIES:
            return f"authentication failed: still challenged ({code}) after {tries} answers"
        proxy = code == 407
        challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        answer_header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            challenge = choose_challenge(
                response.headers_all(challenge_header), realm=credentials.realm
            )
        except SipParseError as exc:
            return f"authentication failed: {exc}"
        answered = request.auth_headers if tries else ()
        if any(name == answer_header for name, _ in answered) and not challenge.stale:
            return (
                f"authentication failed: credentials for realm {challenge.realm!r} "
                f"were rejected ({code} again)"
            )
        if leg.auth_challenges is None:
            leg.auth_challenges = {}
        leg.auth_challenges[answer_header] = challenge
        self.stats.auth_retries += 1
        request.auth_tries += 1
        return None

    def _credentials(
        self, leg: Leg, *, method: str, uri: str, body: bytes = b""
    ) -> tuple[tuple[str, str], ...]:
        """Fresh credentials (next nc) for every challenge the leg has answered, if any."""
        challenges = leg.auth_challenges
        credentials = leg.credentials
        if not challenges or credentials is None:
            return ()
        if leg.auth is None:
            leg.auth = DigestSession(
                credentials.username,
                credentials.password,
                realm=credentials.realm,
                random_bytes=self._random_bytes,
            )
        answers: list[tuple[str, str]] = []
        for header, challenge in challenges.items():
            try:
                answers.append(
                    (header, leg.auth.authorize(challenge, method=method, uri=uri, body=body))
                )
            except (LocalProtocolError, SipParseError):
                continue  # the request goes without; its challenge then ends the retries
        return tuple(answers)

    # -- the end of a leg ---------------------------------------------------------------------

    def _finish(
        self,
        leg: Leg,
        event_type: TerminalEventType,
        now: float,
        *,
        event_reason: str,
        hangup_reason: HangupReason,
        hangup_by: HangupBy,
        error: str | None = None,
        reason_value: ReasonValue | None = None,
        ended_at: float | None = None,
    ) -> None:
        """Emit the leg's one terminal event with its CDR and forget the leg.

        `ended_at` is when the call ended for billing (default `now`): for a leg we hung up,
        when our BYE went out."""
        if leg.ended:
            return
        leg.advance(LegInput.FINISHED)
        leg.stop_timers()
        invite_tx = leg.invite.transaction
        if invite_tx is not None and invite_tx.state in _LIVE_INVITE_STATES:
            # No more retransmissions for a leg that is gone, but a late final still gets
            # its ACK (§17.1.1.3) and a late 2xx its ACK and BYE.
            self._transactions.detach(invite_tx, now)
        self._stop_refresh(leg, now)
        if self._legs.get(leg.call_id) is leg:
            del self._legs[leg.call_id]
        leg.free_invite_parts()
        self.stats.legs_ended += 1
        if leg.recovered:
            event_reason = f"recovered leg: {event_reason}"
        if reason_value is None and event_type is LegCancelled:
            reason_value = self._cancel_reason(leg)  # the Reason our CANCEL carried
        cdr = CdrRecord(
            call_id=leg.call_id,
            correlation_id=leg.correlation_id,
            scenario=leg.scenario,
            trunk=leg.trunk,
            from_uri=leg.from_uri,
            to_uri=leg.to_uri,
            started_at=leg.started_at,
            first_provisional_at=leg.first_provisional_at,
            answered_at=leg.answered_at,
            ended_at=now if ended_at is None else min(ended_at, now),
            final_status_code=leg.final_status_code,
            disposition=classify_disposition(
                leg.final_status_code,
                cancel_requested=leg.cancel_requested,
                ring_timeout=leg.cancel_by_ring_timeout,
            ),
            hangup_reason=hangup_reason,
            hangup_by=hangup_by,
            reason_protocol=reason_value.protocol if reason_value else None,
            reason_cause=reason_value.cause if reason_value else None,
            reason_text=reason_value.text if reason_value else None,
            codec=leg.codec,
            srtp=leg.srtp,
            error=error,
        )
        self._emit(
            event_type(
                call_id=leg.call_id,
                correlation_id=leg.correlation_id,
                scenario=leg.scenario,
                at=now,
                status_code=leg.final_status_code,
                reason=event_reason,
                cdr=cdr,
            )
        )

    @staticmethod
    def _cancel_reason(leg: Leg) -> ReasonValue:
        hangup = LocalHangup.RING_TIMEOUT if leg.cancel_by_ring_timeout else LocalHangup.NORMAL
        return reason_for_local_hangup(hangup)

    def _finish_ending(self, leg: Leg, now: float, *, problem: str | None = None) -> None:
        """Record a leg whose teardown (our BYE, or a BYE racing it) is over."""
        ending = leg.ending
        if ending is None:
            ending = Ending(
                hangup_reason=HangupReason.NORMAL,
                hangup_by=HangupBy.LOCAL,
                event_reason="ended",
            )
        self._finish(
            leg,
            LegEnded,
            now,
            event_reason=ending.event_reason,
            hangup_reason=ending.hangup_reason,
            hangup_by=ending.hangup_by,
            error=ending.error or problem,
            reason_value=ending.reason_value,
            ended_at=ending.ended_at,
        )

    # -- answers nobody waits for -------------------------------------------------------------

    def _end_orphan_answer(
        self, response: Response, transport: Transport, source: Address, now: float
    ) -> None:
        """ACK and BYE a 2xx to an INVITE that has no live leg (another fork, a dropped leg).

        Never leaves a callee half-connected; retransmissions of that 2xx get the same ACK.
        """
        call_id = response.call_id or ""
        key = (call_id, response.to_tag or "")
        known = self._orphan_acks.get(key)
        if known is not None:
            self.stats.absorbed_retransmissions += 1
            self._send(*known)
            return
        if len(self._orphan_acks) >= self.config.max_remembered:
            self.stats.dropped_answers += 1  # a flood: never let it grow memory or BYEs
            return
        local_header = response.header("from")
        remote_header = response.header("to")
        if not call_id or local_header is None or remote_header is None:
            self.stats.stray_responses += 1
            return
        invite_cseq = response.cseq[0]
        hop = NextHop(address=source, transport=transport)
        dialog = Dialog.from_answer(
            response,
            call_id=call_id,
            local_header=local_header,
            remote_header_without_tag=remote_header,
            invite_cseq=invite_cseq,
            fallback_target=f"sip:{format_hostport(*source)}",
            fallback_hop=hop,
        )
        hop = dialog.next_hop
        ack = dialog.build_request(
            "ACK", via=self._via_for(hop.transport, self._ids.branch()), cseq=invite_cseq
        ).to_bytes()
        self._send(ack, hop.transport, hop.address)
        branch = self._ids.branch()
        reason = reason_for_local_hangup(LocalHangup.NORMAL).render()
        bye = dialog.build_request(
            "BYE",
            via=self._via_for(hop.transport, branch),
            cseq=invite_cseq + 1,
            extra_headers=[("Reason", reason), ("User-Agent", self.config.user_agent)],
        ).to_bytes()
        self._transactions.start(
            method="BYE",
            branch=branch,
            data=bye,
            transport=hop.transport,
            address=hop.address,
            owner=None,
            now=now,
        )
        self.stats.orphan_answers += 1
        self._orphan_acks[key] = (ack, hop.transport, hop.address)
        self._schedule(now + self._timer_config.timer_b, self._forget_orphan, key)

    def _dialog_for(self, leg: Leg) -> Dialog:
        if leg.dialog is None:
            raise LocalProtocolError(f"leg {leg.call_id} has no dialog yet")
        return leg.dialog

    def _forget_orphan(self, key: tuple[str, str], now: float) -> None:
        self._orphan_acks.pop(key, None)

    # -- the INVITEs we sent ------------------------------------------------------------------

    def _remember_invite(self, call_id: str, from_tag: str, cseq: int, now: float) -> None:
        """Note an INVITE we sent, so a late 2xx to it (or a fork's) is still ours to end."""
        invites = self._sent_invites
        # Expiry is monotonic in insertion order: the expired ones are at the front.
        while invites:
            oldest = next(iter(invites))
            if invites[oldest] > now and len(invites) < self.config.max_remembered:
                break
            del invites[oldest]
        invites.pop((call_id, from_tag, cseq), None)
        invites[(call_id, from_tag, cseq)] = (
            now + self.config.max_ring_time + self._timer_config.timer_b
        )

    def _sent_this_invite(self, response: Response, now: float) -> bool:
        """Whether a response's Call-ID, From tag and CSeq name an INVITE we sent."""
        key = (response.call_id or "", response.from_tag or "", response.cseq[0])
        until = self._sent_invites.get(key)
        return until is not None and now < until
