"""RFC 4028 session timers of established legs: our UPDATE refreshes and the expiry watchdog."""

from __future__ import annotations

from sipstack.errors import SipParseError
from sipstack.headers.session_timer import MinSE, SessionExpires
from sipstack.leg import Leg, LegState
from sipstack.message import Request, Response
from sipstack.reason import LocalHangup
from sipstack.transactions import ClientTransaction
from sipstack.uac_base import CoreBase
from sipstack.uac_build import SUPPORTED

# RFC 3261 §14.1: after a 491 the UAC that does not own the Call-ID waits 0 to 2 s; we wait 2 s.
_GLARE_RETRY_DELAY = 2.0
# RFC 4028 §10: the side that is not the refresher gives up at expiry minus min(32, SE/3).
_WATCHDOG_MARGIN_CAP = 32.0


def supports_timer(message: Request | Response) -> bool:
    values = message.headers_all("supported") + message.headers_all("require")
    return any(value.strip().lower() == "timer" for value in values)


class SessionTimers(CoreBase):
    """Refreshes the session with UPDATE when we are the refresher, watches it otherwise."""

    def _start_session_timer(self, leg: Leg, now: float) -> None:
        if leg.session_interval is not None:
            self._arm_session_timer(leg, now)

    def _arm_session_timer(self, leg: Leg, now: float) -> None:
        if leg.session_timer is not None:
            leg.session_timer.cancel()
            leg.session_timer = None
        interval = leg.session_interval
        if interval is None:
            return
        if leg.we_refresh:
            leg.session_timer = self._schedule(now + interval / 2, self._on_refresh_due, leg)
        else:
            margin = min(_WATCHDOG_MARGIN_CAP, interval / 3)
            leg.session_timer = self._schedule(
                now + interval - margin, self._on_session_expired, leg
            )

    def _on_refresh_due(self, leg: Leg, now: float) -> None:
        leg.session_timer = None
        if leg.ended or leg.state is not LegState.ESTABLISHED:
            return
        self._send_refresh(leg, now)

    def _send_refresh(self, leg: Leg, now: float) -> None:
        interval = leg.session_interval
        if interval is None:
            return
        headers = [
            ("Contact", leg.contact),
            ("Supported", SUPPORTED),
            ("Session-Expires", f"{interval};refresher=uac"),
            ("Min-SE", str(self.config.min_se)),
            ("User-Agent", self.config.user_agent),
            *leg.refresh_auth_headers,
        ]
        self.stats.session_refreshes_sent += 1
        leg.refresh_tx = self._send_in_dialog(leg, "UPDATE", headers, now)

    def _on_session_expired(self, leg: Leg, now: float) -> None:
        leg.session_timer = None
        if leg.ended or leg.state is not LegState.ESTABLISHED:
            return
        self._start_bye(
            leg,
            now,
            LocalHangup.SESSION_TIMER_EXPIRED,
            event_reason="session timer expired: no refresh from the peer",
        )

    def _on_refresh_response(
        self, leg: Leg, transaction: ClientTransaction, response: Response, now: float
    ) -> None:
        code = response.status_code
        if transaction is not leg.refresh_tx or code < 200:
            return
        leg.refresh_tx = None
        if leg.ended or leg.state is not LegState.ESTABLISHED:
            return
        if code < 300:
            self._on_refresh_accepted(leg, response, now)
            return
        if (
            code == 422
            and not leg.refresh_422_retried
            and self._raise_interval_to_min_se(leg, response)
        ):
            leg.refresh_422_retried = True
            self._send_refresh(leg, now)
            return
        if code in (401, 407) and not leg.refresh_auth_headers:
            outcome = self._authorize(
                leg, response, method="UPDATE", uri=self._dialog_for(leg).remote_target
            )
            if not isinstance(outcome, str):
                leg.refresh_auth_headers = (outcome,)
                self._send_refresh(leg, now)
                return
        if code in (405, 501):
            # The peer cannot take UPDATE refreshes; without them it cannot police the session
            # either, so we keep the call and stop refreshing rather than drop it.
            leg.session_interval = None
            return
        if code == 491 and not leg.refresh_retry_used:
            leg.refresh_retry_used = True
            leg.session_timer = self._schedule(now + _GLARE_RETRY_DELAY, self._on_refresh_due, leg)
            return
        self._fail_refresh(leg, now, f"session refresh failed: {code} {response.reason}")

    def _on_refresh_accepted(self, leg: Leg, response: Response, now: float) -> None:
        leg.refresh_422_retried = False
        leg.refresh_retry_used = False
        value = response.header("session-expires")
        if value is not None:
            try:
                answered = SessionExpires.parse(value)
            except SipParseError:
                answered = None
            if answered is not None:
                current = leg.session_interval or answered.delta
                if 1 <= answered.delta < current:
                    leg.session_interval = answered.delta
                if answered.refresher == "uas":
                    leg.we_refresh = False
        self._arm_session_timer(leg, now)

    def _raise_interval_to_min_se(self, leg: Leg, response: Response) -> bool:
        value = response.header("min-se")
        if value is None:
            return False
        try:
            min_se = MinSE.parse(value).delta
        except SipParseError:
            return False
        leg.session_interval = max(leg.session_interval or 0, min_se)
        return True

    def _on_refresh_timeout(self, leg: Leg, transaction: ClientTransaction, now: float) -> None:
        if transaction is not leg.refresh_tx:
            return
        leg.refresh_tx = None
        if not leg.ended and leg.state is LegState.ESTABLISHED:
            self._fail_refresh(leg, now, "session refresh got no response")

    def _fail_refresh(self, leg: Leg, now: float, error: str) -> None:
        self._start_bye(
            leg,
            now,
            LocalHangup.SESSION_TIMER_EXPIRED,
            error=error,
            event_reason=error,
        )

    def _on_peer_refresh(
        self, leg: Leg, request: Request, now: float
    ) -> tuple[int, list[tuple[str, str]]]:
        """A re-INVITE/UPDATE from the peer: (status, session headers) for our answer."""
        value = request.header("session-expires")
        if value is None:
            if leg.session_interval is not None and not leg.we_refresh:
                self._arm_session_timer(leg, now)  # any refresh restarts the watchdog
            return 200, []
        try:
            offered = SessionExpires.parse(value)
        except SipParseError:
            return 400, []
        if offered.delta < self.config.min_se:
            return 422, [("Min-SE", str(self.config.min_se))]
        peer_supports = supports_timer(request)
        # In the peer's request, "uac" names the peer and "uas" names us (RFC 4028 §9).
        refresher = offered.refresher or ("uac" if peer_supports else "uas")
        self.stats.session_refreshes_received += 1
        if leg.state is LegState.ESTABLISHED:
            leg.session_interval = offered.delta
            leg.we_refresh = refresher == "uas"
            self._arm_session_timer(leg, now)
        headers = [("Session-Expires", f"{offered.delta};refresher={refresher}")]
        if refresher == "uac":
            headers.append(("Require", "timer"))
        return 200, headers
