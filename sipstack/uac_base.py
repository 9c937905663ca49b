"""State and primitives the UAC core's parts share: sending, events, timers, ACK, BYE, leg ends."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sipstack.cdr import HangupReason
from sipstack.config import CoreConfig
from sipstack.core_output import CoreStats, Outgoing
from sipstack.dialog import Dialog, NextHop
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.events import CoreEvent, LegCancelled, LegEnded, LegFailed
from sipstack.headers.session_timer import MinSE
from sipstack.leg import Leg, UnackedResponse
from sipstack.message import Request, Response
from sipstack.reason import (
    Q850,
    LocalHangup,
    ReasonValue,
)
from sipstack.timers import TimerHandle, TimerHeap
from sipstack.transactions import ClientTransaction, TransactionLayer, TransactionUser, TxState
from sipstack.transport import Address, Transport, transport_for_request
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


class CoreShared:
    """What every part of UacCore shares: configuration, counters, legs, transactions, timers,
    the bounded memories, and the primitives to send, schedule, ACK and send in dialog. Held
    by the core as `core.shared`; nothing inherits from it."""

    def __init__(
        self,
        config: CoreConfig | None = None,
        *,
        random_bytes: RandomBytes = os.urandom,
        user: TransactionUser,
    ) -> None:
        self.config = config if config is not None else CoreConfig()
        self.stats = CoreStats()
        self._timer_config = self.config.timers
        self._random_bytes = random_bytes
        self._ids = IdGenerator(random_bytes)
        self._heap = TimerHeap()
        self._outgoing: list[Outgoing] = []
        self._events: list[CoreEvent] = []
        self._legs: dict[str, Leg] = {}
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
        cseq = dialog.next_cseq()

        def build(transport: Transport) -> Request:
            return dialog.build_request(
                method,
                via=self._via_for(transport, branch),
                cseq=cseq,
                extra_headers=extra_headers,
                body=body,
            )

        transport = hop.transport
        request = build(transport)
        data = request.to_bytes()
        # RFC 3261 §18.1.1 for in-dialog requests too: one too big for UDP goes over TCP to
        # the same hop with a TCP Via, when we have a TCP address to name and may leave UDP.
        moved = transport_for_request(
            transport,
            len(data),
            udp_only=leg.udp_only or not self.config.listens_on(Transport.TCP),
            path_mtu=self.config.path_mtu,
        )
        if moved is not transport:
            transport = moved
            request = build(transport)
            data = request.to_bytes()
        transaction = self._transactions.start(
            method=method,
            branch=branch,
            data=data,
            transport=transport,
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

    # -- digest -------------------------------------------------------------------------------

    # -- the end of a leg ---------------------------------------------------------------------

    # -- answers nobody waits for -------------------------------------------------------------

    def _dialog_for(self, leg: Leg) -> Dialog:
        if leg.dialog is None:
            raise LocalProtocolError(f"leg {leg.call_id} has no dialog yet")
        return leg.dialog

    # -- the INVITEs we sent ------------------------------------------------------------------
