"""UacCore: the sans-IO outbound SIP UAC for many legs (bytes and `now` in, bytes and events out).

Over 500 lines on purpose: about 80 of them are this list of decisions, and the rest is the
public API (dial, cancel, bye, confirm/abort, drop, cleanup, recovery), the transaction-user
callbacks and the routing of each response to the part that owns it. The work itself is
done by parts the core holds (uac_invite, uac_session_timer, uac_incoming, uac_connection,
uac_endings, uac_digest, uac_strays) over the shared state and primitives of uac_base.

The shell feeds `receive`, `handle_timer` and `connection_lost`, sends what `outgoing()` returns
and re-arms one timer at `next_deadline()`. Every leg ends with exactly one terminal event
(LegFailed, LegCancelled or LegEnded) carrying its CDR; after it the leg is gone.

Decisions where the brief or the RFCs leave room:
- A 2xx whose SDP is unusable was answered: it is ACKed and BYEd at once and ends as LegEnded
  (hangup_by local, hangup_reason error, error "unusable SDP answer"); no AnswerReceived.
- A 2xx that crosses our CANCEL is ACKed and BYEd; it ends as LegEnded (disposition answered).
- A 2xx no live leg waits for (another fork, a dropped leg) is ACKed and BYEd, never left open,
  but only when it answers an INVITE we sent (its transaction, or Call-ID + From tag + CSeq of
  one we remember): any other 2xx is dropped and counted (stats.dropped_answers), so a forged
  2xx cannot make us BYE whatever Contact it names. Every table about things other than live
  legs is capped by CoreConfig.max_remembered.
- confirm_answer / abort_answer return False when the leg ended meanwhile (pre_ack races the
  network); they raise LocalProtocolError only for a leg that never had an answer.
- An answer nobody confirms within 64*T1 is ACKed and BYEd (the UAS gives up then anyway).
- drop() sends nothing and still reports the leg (LegCancelled after a cancel, LegEnded once
  answered, else LegFailed), stamped with the latest `now` the core was given.
- cleanup_if_present() is for a peer known to be gone: no SIP, hangup_by remote.
- An unanswered INVITE without ring_timeout is CANCELled after CoreConfig.max_ring_time.
- The 2xx ACK bytes are kept for 64*T1 (retransmitted 2xx get the same ACK); a 2xx after
  that gets a freshly built ACK for the same dialog and CSeq.
- Session refreshes use UPDATE unless the 2xx's Allow lacks it; a 405/501 to the UPDATE
  switches to re-INVITE (same SDP, same o= version) at once; a 405/501 to that too stops
  refreshing and keeps the call (the peer cannot police the session either); 408, 481 and
  timeouts end it at once with timer_expired (RFC 3261 §12.2.1.2). Any other failure keeps
  the session until it expires (RFC 4028 §10), then BYEs with timer_expired; a 491 is retried
  after 2.1-4 s (§14.1), a 500/503 with Retry-After after that delay, while before expiry.
- A Session-Expires in the 2xx is honoured even when we offered none (we always send
  `Supported: timer`, so a proxy may impose it, RFC 4028 §8.1).
- A peer's refresh without Session-Expires would switch the timer off (RFC 4028 §9): we keep
  it and refresh ourselves, and our 2xx says `refresher=uas`. A 2xx to our refresh without
  Session-Expires keeps the interval (refreshing into a peer that no longer polices is
  harmless; stopping while it still does would drop the call).
- A peer's re-offer (re-INVITE/UPDATE) is answered keeping the session: the codec in use under
  the offer's payload number, o= version + 1 only when the SDP changes (uac_sdp); an offer
  without that codec gets 488, a non-SDP body 415. Offerless re-INVITE: our last SDP.
- Digest: challenges are remembered per leg and answered with a fresh nc on every later
  request (BYE, UPDATE, re-INVITE pre-emptively, §22.3); a request is given up after a
  non-stale challenge of a kind it already answered, or after 3 answers.
- A leg that ends before its INVITE's final response (CANCEL deadline, drop, cleanup) leaves
  the transaction detached for 64*T1: no retransmissions, but a late final is still ACKed and
  a late 2xx ACKed and BYEd. A final 3xx to the INVITE is followed (RFC 3261 §8.1.3.4; a new
  INVITE, CSeq + 1, same Call-ID and From tag, to the best Contact by q then order not yet
  tried for the leg, at most CoreConfig.max_redirects; a Redirected event, CdrRecord.redirects);
  one not followed (no usable Contact, all tried, the bound reached) ends the leg, its Contacts
  in the failure reason.
- Requests: out-of-dialog OPTIONS 200, out-of-dialog INVITE 403 (we take no calls), other
  unknown dialogs 481, unknown methods 501 with Allow, Require of anything but `timer` 420,
  in-dialog CANCEL 200 (nothing pending). Failures to INVITEs over UDP are resent until their
  ACK (Timer G/H); responses carry received/rport (RFC 3581). A response with more than one
  Via is dropped (§8.1.3.3).
- An INVITE over 1300 bytes planned for UDP goes over TCP instead (RFC 3261 §18.1.1, path MTU
  unknown; CoreConfig.path_mtu when known) unless DialRequest.udp_only or CoreConfig.udp_only;
  the rule is sipstack.transport.transport_for_request. The leg then stays on TCP (its CANCEL
  and failure ACK follow the INVITE's transaction). An in-dialog request of a UDP leg over the
  limit goes over TCP to the same hop with a TCP Via, by the same rule (uac_base). Without a
  TCP address in CoreConfig.local_addresses nothing moves (nothing to name in the Via).
- In-dialog requests go to the first Route, else the remote target; host names are passed to
  the shell as they are (it resolves them), since the core does no I/O.
- A lost TCP/TLS connection (uac_connection): an INVITE with no response yet fails; a ringing
  leg gets its CANCEL again and ends when that CANCEL is answered or fails (a 487 is only
  ACKed, a 2xx ACKed and BYEd); an answered leg gets a BYE with Reason Q.850 31 "connection
  lost" and ends on its outcome. The shell opens a new connection to send them. An answered
  leg whose in-dialog next hop is another address keeps its call.
- hangup_reason: a far end's end is classified from its Reason header only (none: normal),
  never from the status code; our own ends keep the local cause's class (ring timeout and
  session timer: timer_expired; our errors: error; a normal hangup: normal).
- A leg we hung up ended, for its CDR (ended_at, duration, billsec), when our BYE went out:
  waiting up to Timer F for the BYE's answer is not call time. The terminal event's `at` is
  still when the leg was finished.
- A cancelled leg's CDR keeps the Reason our CANCEL carried (ring timeout: Q.850 19).
- The CDR's first_provisional_at ignores 100 Trying (hop-by-hop); any 1xx, 100 included,
  still releases a queued CANCEL and is reported as ProvisionalReceived.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sipstack.cdr import HangupBy, HangupReason
from sipstack.config import CoreConfig
from sipstack.core_output import Outgoing
from sipstack.dial import DialRequest
from sipstack.dialog import Dialog, DialogSnapshot
from sipstack.errors import LocalProtocolError, SipParseError, UnknownLegError
from sipstack.events import (
    CoreEvent,
    DialogEstablished,
    InviteSent,
    LegCancelled,
    LegEnded,
    LegFailed,
)
from sipstack.headers.name_addr import NameAddr
from sipstack.leg import Leg, LegInput, LegPhase
from sipstack.message import Request, Response, parse_message
from sipstack.reason import Q850, LocalHangup, ReasonValue
from sipstack.transactions import ClientTransaction, TxState
from sipstack.transport import Address, Transport
from sipstack.uac_base import CONNECTION_LOST, CoreShared
from sipstack.uac_build import RandomBytes, plan_invite
from sipstack.uac_connection import ConnectionLoss
from sipstack.uac_digest import Digest
from sipstack.uac_endings import LegEndings
from sipstack.uac_incoming import IncomingRequests
from sipstack.uac_invite import InviteHandling
from sipstack.uac_session_timer import SessionTimers
from sipstack.uac_strays import StrayAnswers

RECOVERED_REASON = ReasonValue(Q850, 16, "Call ended by recovery after a worker restart")

BadInputHook = Callable[[Address, Transport, ValueError], None]
"""Told of each message `receive` drops as unreadable: its source, transport and the error
(SipParseError for bytes that are not SIP; a ValueError for a header value we could not use).
It runs inside `receive`, so it must not raise."""


class UacCore:
    """All outbound legs of one signaling process. Not thread-safe: one loop drives it."""

    def __init__(
        self,
        config: CoreConfig | None = None,
        *,
        random_bytes: RandomBytes = os.urandom,
        on_bad_input: BadInputHook | None = None,
    ) -> None:
        # The state and primitives every part shares; the parts, one job each, reach it and
        # each other through the core.
        self.shared = CoreShared(config, random_bytes=random_bytes, user=self)
        self.config = self.shared.config
        self.stats = self.shared.stats
        # The parts, one job each; they reach each other and the shared state through the core.
        self._invites = InviteHandling(self)
        self._session_timers = SessionTimers(self)
        self._incoming = IncomingRequests(self)
        self._connections = ConnectionLoss(self)
        self._digest = Digest(self)
        self._endings = LegEndings(self)
        self._strays = StrayAnswers(self)
        self._now = 0.0  # the latest `now` we were given: the clock of drop()
        self._on_bad_input = on_bad_input

    def build_failure_ack(self, transaction: ClientTransaction, response: Response) -> bytes:
        """TransactionUser: the ACK of a failure to one of our INVITEs (uac_invite)."""
        return self._invites.build_failure_ack(transaction, response)

    # -- the shell's side ---------------------------------------------------------------------

    @property
    def leg_count(self) -> int:
        return len(self.shared._legs)

    def outgoing(self) -> list[Outgoing]:
        """Everything to send since the last call, in order (drains)."""
        pending = list(self.shared._outgoing)
        self.shared._outgoing.clear()
        return pending

    def events(self) -> list[CoreEvent]:
        """Every event since the last call, in order (drains)."""
        pending = list(self.shared._events)
        self.shared._events.clear()
        return pending

    def next_deadline(self) -> float | None:
        return self.shared._heap.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Run every timer due at `now`."""
        self._now = now
        self.shared._heap.run_due(now)

    def receive(self, data: bytes, source: Address, transport: Transport, now: float) -> None:
        """One datagram or one framed stream message; never raises for what the peer sent."""
        self._now = now
        self.stats.messages_received += 1
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            if self._on_bad_input is not None:
                self._on_bad_input(source, transport, exc)
            return
        try:
            if isinstance(message, Response):
                self._on_response(message, source, transport, now)
            else:
                self._incoming._on_request(message, source, transport, now)
        except ValueError as exc:
            # SipParseError / RemoteProtocolError from a header value only read here.
            self.stats.rejected_messages += 1
            if self._on_bad_input is not None:
                self._on_bad_input(source, transport, exc)

    def connection_lost(self, transport: Transport, address: Address, now: float) -> None:
        """The TCP/TLS connection to `address` is gone. A leg whose INVITE has no response yet
        fails; a ringing leg is CANCELled and an answered one BYEd over a new connection."""
        self._now = now
        self._connections._lose_connection(transport, address, now)

    # -- the API ------------------------------------------------------------------------------

    def dial(self, request: DialRequest, now: float) -> str:
        """Send the INVITE of a new leg; LocalProtocolError names a bad DialRequest field."""
        self._now = now
        if request.call_id and request.call_id in self.shared._legs:
            raise LocalProtocolError(
                f"DialRequest.call_id: {request.call_id!r} is already used by a live leg"
            )
        if len(self.shared._legs) >= self.config.max_legs:
            raise LocalProtocolError(f"too many legs: max_legs={self.config.max_legs} reached")
        plan = plan_invite(request, self.config, self.shared._ids)
        if plan.call_id in self.shared._legs:
            raise LocalProtocolError(f"Call-ID {plan.call_id!r} is already used by a live leg")
        leg = Leg(
            call_id=plan.call_id,
            credentials=request.credentials,
            max_duration=request.max_duration,
            correlation_id=request.correlation_id,
            scenario=str(request.scenario),
            trunk=request.trunk,
            transport=plan.transport,
            address=plan.address,
            via_prefix=plan.via_prefix,
            request_uri=plan.request_uri,
            from_header=plan.from_header,
            from_tag=plan.from_tag,
            from_uri=plan.from_uri,
            to_header=plan.to_header,
            to_uri=plan.request_uri,
            started_at=now,
        )
        leg.invite_head = plan.head
        leg.invite_tail = plan.tail
        leg.offer_body = plan.body
        leg.local_sdp = plan.body
        leg.min_se = self.config.min_se
        leg.srtp_key = plan.srtp_key
        leg.offer_session_expires = plan.session_expires
        leg.udp_only = request.udp_only or self.config.udp_only
        leg.contact = plan.contact
        self.shared._legs[leg.call_id] = leg
        self.stats.legs_started += 1
        self._invites._send_invite(leg, now)
        self.shared._emit(
            InviteSent(
                call_id=leg.call_id,
                correlation_id=leg.correlation_id,
                scenario=leg.scenario,
                at=now,
            )
        )
        ring_timeout = request.ring_timeout
        if ring_timeout is None:
            ring_timeout = self.config.max_ring_time
        leg.ring_timer = self.shared._schedule(
            now + ring_timeout, self._invites._on_ring_timeout, leg
        )
        return leg.call_id

    def cancel(self, call_id: str, now: float) -> None:
        """CANCEL an unanswered leg (queued until a 1xx, never sent before one); again: no-op."""
        self._now = now
        leg = self._leg(call_id)
        if leg.state.answered:
            raise LocalProtocolError(f"leg {call_id} is already established; use BYE")
        self._invites._request_cancel(leg, now, ring_timeout=False)

    def bye(self, call_id: str, now: float, reason: LocalHangup | None = None) -> None:
        """Hang up an answered leg; it ends on the BYE's outcome. Again while ending: no-op."""
        self._now = now
        leg = self._leg(call_id)
        if not leg.state.answered:
            raise LocalProtocolError(
                f"leg {call_id} is not answered: dialog not ready for BYE (use cancel)"
            )
        self._endings._start_bye(leg, now, reason or LocalHangup.NORMAL)

    def confirm_answer(self, call_id: str, now: float) -> bool:
        """pre_ack succeeded: ACK, establish. False when the leg ended meanwhile."""
        self._now = now
        leg = self._leg_awaiting_pre_ack(call_id, "confirm")
        if leg is None:
            return False
        if leg.answer_timer is not None:
            leg.answer_timer.cancel()
            leg.answer_timer = None
        self.shared._send_ack(leg)
        leg.advance(LegInput.CONFIRMED)
        # The UAS retransmits its 2xx for 64*T1 at most; later ones get a freshly built ACK.
        self.shared._schedule(now + self.shared._timer_config.timer_b, self._forget_ack, leg)
        self.shared._emit(
            DialogEstablished(
                call_id=leg.call_id,
                correlation_id=leg.correlation_id,
                scenario=leg.scenario,
                at=now,
                status_code=leg.final_status_code,
                reason="answered",
                codec=leg.codec,
                remote_rtp=leg.remote_rtp,
                srtp_key=leg.srtp_key if leg.srtp else None,
            )
        )
        if leg.max_duration is not None:
            leg.duration_timer = self.shared._schedule(
                now + leg.max_duration, self._on_max_duration, leg
            )
        self._session_timers._start_session_timer(leg, now)
        return True

    def abort_answer(self, call_id: str, why: str, now: float) -> bool:
        """pre_ack failed: ACK then BYE (never half-open), CDR error `why`. False if gone."""
        self._now = now
        leg = self._leg_awaiting_pre_ack(call_id, "abort")
        if leg is None:
            return False
        self._endings._start_bye(
            leg, now, LocalHangup.ERROR, error=why, event_reason=f"answer aborted: {why}"
        )
        return True

    def is_established(self, call_id: str) -> bool:
        """True once the 2xx was ACKed (also while our BYE is out)."""
        leg = self.shared._legs.get(call_id)
        return leg is not None and (
            leg.state is LegPhase.ESTABLISHED or leg.state is LegPhase.ENDING
        )

    def drop(self, call_id: str) -> bool:
        """Forget a leg without sending anything (its terminal event still comes); idempotent."""
        leg = self.shared._legs.get(call_id)
        if leg is None:
            return False
        self._end_without_signalling(
            leg,
            self._now,
            hangup_reason=HangupReason.NORMAL,
            hangup_by=HangupBy.LOCAL,
            event_reason="dropped without signalling",
        )
        return True

    def cleanup_if_present(
        self, call_id: str, reason_class: HangupReason | str, now: float
    ) -> None:
        """The peer is known to be gone (learned elsewhere): end the leg without SIP, if any."""
        self._now = now
        try:
            hangup_reason = HangupReason(reason_class or HangupReason.NORMAL)
        except ValueError:
            known = ", ".join(reason.value for reason in HangupReason)
            raise LocalProtocolError(
                f"reason_class {reason_class!r} is not one of {known}"
            ) from None
        leg = self.shared._legs.get(call_id)
        if leg is None:
            return
        self._end_without_signalling(
            leg,
            now,
            hangup_reason=hangup_reason,
            hangup_by=HangupBy.REMOTE,
            event_reason="cleaned up after the peer left",
        )

    # -- persistence and crash recovery -------------------------------------------------------

    def dialog_snapshot(self, call_id: str) -> DialogSnapshot:
        leg = self._leg(call_id)
        dialog = leg.dialog
        return DialogSnapshot(
            call_id=leg.call_id,
            local_tag=leg.from_tag,
            remote_tag=leg.remote_tag,
            local_cseq=dialog.local_cseq if dialog is not None else leg.invite_cseq,
            remote_target=dialog.remote_target if dialog is not None else leg.request_uri,
            route_set=dialog.route_set if dialog is not None else (),
            transport=leg.transport,
            peer_address=leg.address,
            from_header=leg.from_header,
            to_header=dialog.remote_header if dialog is not None else leg.to_header,
            invite_branch=leg.invite_branch,
            invite_via=leg.invite_via,
            invite_cseq=leg.invite_cseq,
            request_uri=leg.request_uri,
            state=leg.state.value,
            correlation_id=leg.correlation_id,
            scenario=leg.scenario,
            trunk=leg.trunk,
            started_at=leg.started_at,
            answered_at=leg.answered_at,
        )

    def end_recovered(self, snapshot: DialogSnapshot, now: float) -> str:
        """End a leg a dead process owned: BYE if answered, CANCEL if still ringing."""
        self._now = now
        if snapshot.call_id in self.shared._legs:
            raise LocalProtocolError(f"leg {snapshot.call_id} is live here; use bye or cancel")
        state = snapshot.state
        answered = state in (
            LegPhase.ANSWERED.value,
            LegPhase.ESTABLISHED.value,
            LegPhase.ENDING.value,
        )
        if not answered and state not in (LegPhase.CALLING.value, LegPhase.RINGING.value):
            raise LocalProtocolError(
                f"DialogSnapshot.state {state!r} is not calling, ringing, answered, "
                "established or ending"
            )
        if not answered and not snapshot.invite_branch:
            raise LocalProtocolError("DialogSnapshot.invite_branch: empty; cannot CANCEL")
        leg = Leg(
            call_id=snapshot.call_id,
            credentials=None,
            max_duration=None,
            correlation_id=snapshot.correlation_id,
            scenario=snapshot.scenario,
            trunk=snapshot.trunk,
            transport=snapshot.transport,
            address=snapshot.peer_address,
            via_prefix=self.shared._via_prefixes[snapshot.transport],
            request_uri=snapshot.request_uri,
            from_header=snapshot.from_header,
            from_tag=snapshot.local_tag,
            from_uri=_uri_text(snapshot.from_header),
            to_header=snapshot.to_header,
            to_uri=snapshot.request_uri,
            started_at=snapshot.started_at if snapshot.started_at is not None else now,
        )
        leg.recovered = True
        leg.invite_cseq = snapshot.invite_cseq
        leg.invite_via = snapshot.invite_via or self.shared._via_for(
            snapshot.transport, snapshot.invite_branch
        )
        self.shared._legs[leg.call_id] = leg
        if answered:
            fallback = self.shared._fallback_hop(leg)
            dialog = Dialog(
                call_id=snapshot.call_id,
                local_header=snapshot.from_header,
                remote_header=snapshot.to_header,
                local_cseq=snapshot.local_cseq,
                remote_target=snapshot.remote_target,
                route_set=snapshot.route_set,
                next_hop=fallback,
            )
            dialog.next_hop = dialog.resolve_next_hop(fallback)
            leg.dialog = dialog
            leg.remote_tag = snapshot.remote_tag
            leg.final_status_code = 200
            leg.answered_at = snapshot.answered_at if snapshot.answered_at is not None else now
            leg.advance(LegInput.RECOVERED_ANSWERED)
            self._endings._start_bye(
                leg,
                now,
                LocalHangup.NORMAL,
                event_reason="ended after its owner process died",
                reason_value=RECOVERED_REASON,
            )
            return leg.call_id
        existing = self.shared._transactions.find(snapshot.invite_branch, "INVITE")
        if existing is not None:
            self.shared._transactions.abandon(existing)
        leg.invite.transaction = self.shared._transactions.adopt_proceeding_invite(
            branch=snapshot.invite_branch,
            transport=snapshot.transport,
            address=snapshot.peer_address,
            owner=leg,
        )
        leg.advance(LegInput.RECOVERED_RINGING)
        leg.cancel_requested = True
        self._strays._remember_invite(leg.call_id, leg.from_tag, leg.invite_cseq, now)
        self._invites._send_cancel(leg, now)
        return leg.call_id

    # -- transaction user ---------------------------------------------------------------------

    def on_transaction_response(
        self, transaction: ClientTransaction, response: Response, source: Address, now: float
    ) -> None:
        leg: Leg | None = transaction.owner
        if leg is None:
            return  # a BYE to an orphan answer: nothing waits for its outcome
        method = transaction.method
        if transaction is leg.reinvite_tx:
            self._session_timers._on_reinvite_response(leg, transaction, response, now)
            return
        if leg.ended:
            if method == "INVITE" and 200 <= response.status_code < 300:
                self._answer_for_ended_leg(leg, transaction, response, source, now)
            return
        if method == "INVITE":
            self._invites._on_invite_response(leg, transaction, response, source, now)
        elif method == "BYE":
            self._on_bye_response(leg, transaction, response, now)
        elif method == "UPDATE":
            self._session_timers._on_refresh_response(leg, transaction, response, now)
        elif leg.lost_connection and transaction is leg.cancel_tx and response.status_code >= 200:
            self._connections._end_recancelled(leg, now, f"answered {response.status_code}")
        # Other CANCELs: a 200 only stops its retransmissions; a 481 means the INVITE already
        # has (or will have) its final response, which is what ends the leg.

    def on_transaction_timeout(self, transaction: ClientTransaction, now: float) -> None:
        self._on_transaction_failure(transaction, now, transport_error=False)

    def on_transaction_transport_error(self, transaction: ClientTransaction, now: float) -> None:
        self._on_transaction_failure(transaction, now, transport_error=True)

    # -- internals ----------------------------------------------------------------------------

    def _leg(self, call_id: str) -> Leg:
        leg = self.shared._legs.get(call_id)
        if leg is None:
            raise UnknownLegError(f"unknown call-id {call_id!r} (never dialled or already ended)")
        return leg

    def _leg_awaiting_pre_ack(self, call_id: str, verb: str) -> Leg | None:
        """The answered leg whose pre_ack outcome is due; None when it ended or moved past
        its answer meanwhile. LocalProtocolError when it has no answer to `verb`."""
        leg = self.shared._legs.get(call_id)
        if leg is None or leg.ended:
            return None
        if leg.state is not LegPhase.ANSWERED:
            if leg.state.answered:
                return None
            raise LocalProtocolError(
                f"leg {call_id} has no answer to {verb} (state {leg.state.value})"
            )
        return leg

    def _on_response(
        self, response: Response, source: Address, transport: Transport, now: float
    ) -> None:
        if len(response.headers_all("via")) != 1:
            self.stats.rejected_messages += 1  # §8.1.3.3: not a response to us (misrouted)
            return
        number, method = response.cseq
        branch = response.via_branch
        transaction = self.shared._transactions.find(branch, method) if branch else None
        leg: Leg | None = None
        if transaction is None:
            leg = self.shared._legs.get(response.call_id or "")
            if leg is not None and response.from_tag != leg.from_tag:
                leg = None  # the Call-ID of one of ours, but not our From tag: not our dialog
            if leg is not None:
                transaction = _leg_transaction(leg, method, number)
        if transaction is not None:
            self.shared._transactions.receive_response(transaction, response, source, now)
            return
        if method == "INVITE" and 200 <= response.status_code < 300:
            if leg is None and not self._strays._sent_this_invite(response, now):
                # §17.1.1.2/§13.2.2.4 are about our own INVITEs: ACKing and BYEing a 2xx we
                # never asked for, to the Contact it names, would amplify a forgery.
                self.stats.dropped_answers += 1
                return
            if leg is not None and leg.state.answered and number != leg.invite_cseq:
                self._ack_forgotten_reinvite_answer(leg, response)
            elif leg is not None and leg.state.answered:
                self._invites._on_repeated_answer(leg, response, source, now)
            else:
                self._strays._end_orphan_answer(response, transport, source, now)
            return
        self.stats.stray_responses += 1

    def _answer_for_ended_leg(
        self,
        leg: Leg,
        transaction: ClientTransaction,
        response: Response,
        source: Address,
        now: float,
    ) -> None:
        acked = leg.state is LegPhase.ESTABLISHED or leg.state is LegPhase.ENDING
        if acked and response.to_tag == leg.remote_tag:
            self.stats.absorbed_retransmissions += 1
            self.shared._send_ack(leg)
        else:
            self._strays._end_orphan_answer(response, transaction.transport, source, now)

    def _on_bye_response(
        self, leg: Leg, transaction: ClientTransaction, response: Response, now: float
    ) -> None:
        code = response.status_code
        if transaction is not leg.bye.transaction or code < 200:
            return
        if code in (401, 407) and self._digest._answer_challenge(leg, leg.bye, response) is None:
            self._endings._send_bye(leg, now)
            return
        problem = None if code < 300 or code == 481 else f"BYE answered {code} {response.reason}"
        self._endings._finish_ending(leg, now, problem=problem)

    def _on_transaction_failure(
        self, transaction: ClientTransaction, now: float, *, transport_error: bool
    ) -> None:
        leg: Leg | None = transaction.owner
        if leg is None or leg.ended:
            return
        method = transaction.method
        if method == "INVITE" and transaction is leg.reinvite_tx:
            self._session_timers._on_refresh_timeout(leg, transaction, now)
        elif method == "INVITE":
            self._invites._on_invite_timeout(leg, transaction, now, transport_error=transport_error)
        elif method == "BYE":
            if transaction is leg.bye.transaction:
                problem = CONNECTION_LOST if transport_error else "no response to BYE (Timer F)"
                self._endings._finish_ending(leg, now, problem=problem)
        elif method == "UPDATE":
            self._session_timers._on_refresh_timeout(leg, transaction, now)
        elif leg.lost_connection and transaction is leg.cancel_tx:
            outcome = "its new connection failed too" if transport_error else "no response"
            self._connections._end_recancelled(leg, now, outcome)
        # Other CANCELs: the 64*T1 cancel deadline of the leg decides.

    def _ack_forgotten_reinvite_answer(self, leg: Leg, response: Response) -> None:
        """A 2xx to a re-INVITE of ours whose transaction is gone: ACK it all the same."""
        if leg.dialog is None or (leg.remote_tag and response.to_tag != leg.remote_tag):
            self.stats.stray_responses += 1
            return
        self.stats.absorbed_retransmissions += 1
        self.shared._send_ack_for(leg, self.shared._build_ack_for(leg, response.cseq[0]))

    @staticmethod
    def _forget_ack(leg: Leg, now: float) -> None:
        leg.ack_data = None
        if (
            leg.invite.transaction is not None
            and leg.invite.transaction.state is TxState.TERMINATED
        ):
            leg.invite.transaction = None  # Timer M is over: nothing can match it any more

    def _on_max_duration(self, leg: Leg, now: float) -> None:
        leg.duration_timer = None
        if leg.state is LegPhase.ESTABLISHED and not leg.ended:
            self._endings._start_bye(
                leg, now, LocalHangup.MAX_DURATION, event_reason="maximum duration reached"
            )

    def _end_without_signalling(
        self,
        leg: Leg,
        now: float,
        *,
        hangup_reason: HangupReason,
        hangup_by: HangupBy,
        event_reason: str,
    ) -> None:
        self.shared._abandon_transactions(leg)
        if leg.state.answered:
            self._endings._finish(
                leg,
                LegEnded,
                now,
                event_reason=event_reason,
                hangup_reason=hangup_reason,
                hangup_by=hangup_by,
            )
        elif leg.cancel_requested:
            self._endings._finish(
                leg,
                LegCancelled,
                now,
                event_reason=event_reason,
                hangup_reason=self._invites._cancelled_class(leg),
                hangup_by=HangupBy.LOCAL,
            )
        else:
            self._endings._finish(
                leg,
                LegFailed,
                now,
                event_reason=event_reason,
                hangup_reason=hangup_reason,
                hangup_by=hangup_by,
                error=f"ended before an answer: {event_reason}",
            )


def _leg_transaction(leg: Leg, method: str, number: int) -> ClientTransaction | None:
    """The Call-ID fallback: the leg's live transaction for this method and CSeq number."""
    reinvite = leg.reinvite_request
    if method == "INVITE" and reinvite is not None and reinvite.cseq[0] == number:
        transaction = leg.reinvite_tx
        if transaction is None or transaction.state is TxState.TERMINATED:
            return None
        return transaction
    candidates = {
        "INVITE": leg.invite.transaction,
        "CANCEL": leg.cancel_tx,
        "BYE": leg.bye.transaction,
        "UPDATE": leg.refresh.transaction,
    }
    transaction = candidates.get(method)
    if transaction is None or transaction.state is TxState.TERMINATED:
        return None
    if method in ("INVITE", "CANCEL") and number != leg.invite_cseq:
        return None
    return transaction


def _uri_text(header: str) -> str:
    try:
        return NameAddr.parse(header).uri.render()
    except SipParseError:
        return header


__all__ = ["Outgoing", "Request", "UacCore"]
