"""What a leg does when the TCP/TLS connection it relies on breaks: fail, CANCEL or BYE again,
or, for an established call with nothing pending on that connection, nothing at all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.cdr import HangupBy, HangupReason
from sipstack.events import LegCancelled, LegFailed
from sipstack.leg import Leg, LegPhase
from sipstack.reason import LocalHangup, ReasonValue
from sipstack.transactions import TxState
from sipstack.transport import Address, Transport
from sipstack.uac_base import CONNECTION_LOST, CONNECTION_LOST_REASON

if TYPE_CHECKING:
    from sipstack.uac import UacCore

_CANCELLABLE = frozenset({TxState.CALLING, TxState.PROCEEDING})


class ConnectionLoss:
    """No call may stay up at the far end because our connection to it died, and no call ends
    only because a connection closed (RFC 3261 §18: a connection is not a dialog's state).

    A closed connection fails only what was pending on it. An established call with no
    request in flight over it stays up: proxies close idle connections (Kamailio after
    `tcp_connection_lifetime`, 120 s by default), and the next in-dialog request, ours or
    the far end's, opens a new one. An unanswered INVITE fails; a ringing one is CANCELled
    and a BYE in flight goes again, to the same next hop: sending to an address with no
    pooled connection makes the shell open a new one. A leg is rescued once: if the new
    connection breaks too, its CANCEL or BYE fails like any transaction on a dead connection.
    """

    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

    def _lose_connection(self, transport: Transport, address: Address, now: float) -> None:
        # Taken first: what we send below goes to the same address and must not fail with them.
        broken = self._core.shared._transactions.using(transport, address)
        rescued: set[Leg] = set()
        for leg in list(self._core.shared._legs.values()):
            if leg.ended or leg.lost_connection or not relies_on(leg, transport, address):
                continue
            if leg.state is LegPhase.ESTABLISHED:  # no BYE of ours in flight
                continue  # idle as far as this connection goes: its pending requests fail below
            rescued.add(leg)
            self._rescue(leg, now)
        self._core.shared._transactions.fail([tx for tx in broken if tx.owner not in rescued], now)

    def _rescue(self, leg: Leg, now: float) -> None:
        leg.lost_connection = True
        state = leg.state
        invite_tx = leg.invite.transaction
        if state is LegPhase.RINGING and invite_tx is not None and invite_tx.state in _CANCELLABLE:
            leg.stop_timers()
            self._core.shared._abandon(leg.cancel_tx)
            # Still matched, so a late final gets its ACK and a late 2xx its ACK and BYE.
            self._core.shared._transactions.detach(invite_tx, now)
            leg.cancel_sent = True
            leg.cancel_tx = self._core._invites._start_cancel(
                leg, invite_tx, self._recancel_reason(leg), now
            )
        elif not state.answered:
            # No response yet: §9.1 allows no CANCEL, and the INVITE may never have arrived.
            self._core.shared._abandon_transactions(leg, keep_invite=False)
            self._core._endings._finish(
                leg,
                LegCancelled if leg.cancel_requested else LegFailed,
                now,
                event_reason=CONNECTION_LOST,
                hangup_reason=HangupReason.ERROR,
                hangup_by=HangupBy.LOCAL,
                error=CONNECTION_LOST,
            )
        elif state is LegPhase.ENDING:
            self._core.shared._abandon(
                leg.bye.transaction
            )  # our BYE may never have left: the same BYE, anew
            leg.bye.transaction = None
            self._core._endings._send_bye(leg, now)
        else:
            self._core._endings._start_bye(
                leg,
                now,
                LocalHangup.ERROR,
                error=CONNECTION_LOST,
                event_reason=CONNECTION_LOST,
                reason_value=CONNECTION_LOST_REASON,
            )

    def _recancel_reason(self, leg: Leg) -> ReasonValue:
        return (
            self._core._endings._cancel_reason(leg)
            if leg.cancel_requested
            else CONNECTION_LOST_REASON
        )

    def _end_recancelled(self, leg: Leg, now: float, outcome: str) -> None:
        """The CANCEL sent again after a lost connection is over: so is the leg."""
        self._core._endings._finish(
            leg,
            LegCancelled if leg.cancel_requested else LegFailed,
            now,
            event_reason=CONNECTION_LOST,
            hangup_reason=HangupReason.ERROR,
            hangup_by=HangupBy.LOCAL,
            error=f"{CONNECTION_LOST} while ringing; CANCEL sent again, {outcome}",
            reason_value=self._recancel_reason(leg),
        )


def relies_on(leg: Leg, transport: Transport, address: Address) -> bool:
    """Whether the leg's next request would go over that connection: the INVITE's until an
    answer, then the dialog's next hop (a Contact elsewhere no longer needs the first one)."""
    dialog = leg.dialog
    if dialog is not None:
        hop = dialog.next_hop
        return hop.transport is transport and hop.address == address
    return leg.transport is transport and leg.address == address
