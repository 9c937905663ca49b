"""How a leg ends: our BYE with its Reason, and the one terminal event with its CDR."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.cdr import CdrRecord, HangupBy, HangupReason, classify_disposition
from sipstack.events import LegCancelled, LegEnded
from sipstack.leg import Ending, Leg, LegInput, LegPhase
from sipstack.reason import (
    SESSION_TIMER_SIP_REASON,
    LocalHangup,
    ReasonValue,
    reason_for_local_hangup,
    render_reason_header,
)
from sipstack.uac_base import (
    _LIVE_INVITE_STATES,
    HANGUP_CLASS,
    TerminalEventType,
)

if TYPE_CHECKING:
    from sipstack.uac import UacCore


class LegEndings:
    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

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
            self._core.shared._send_ack(
                leg
            )  # never leave a 2xx unacknowledged, even when hanging up
        leg.stop_timers()
        self._core.shared._stop_refresh(leg, now)
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
        headers.append(("User-Agent", self._core.shared.config.user_agent))
        dialog = self._core.shared._dialog_for(leg)
        leg.bye.auth_headers = self._core._digest._credentials(
            leg, method="BYE", uri=dialog.request_uri_and_routes()[0]
        )
        headers.extend(leg.bye.auth_headers)
        leg.bye.transaction = self._core.shared._send_in_dialog(leg, "BYE", headers, now)

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
            self._core.shared._transactions.detach(invite_tx, now)
        self._core.shared._stop_refresh(leg, now)
        if self._core.shared._legs.get(leg.call_id) is leg:
            del self._core.shared._legs[leg.call_id]
        leg.free_invite_parts()
        self._core.shared.stats.legs_ended += 1
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
            retry_after=leg.retry_after,
            redirects=leg.redirects,
            codec=leg.codec,
            srtp=leg.srtp,
            error=error,
        )
        self._core.shared._emit(
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
