"""RFC 4028 session timers of established legs: our UPDATE refreshes and the expiry watchdog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.errors import SipParseError
from sipstack.headers.retry_after import retry_after_seconds
from sipstack.headers.session_timer import SessionExpires
from sipstack.leg import Leg, LegPhase
from sipstack.message import Request, Response
from sipstack.reason import LocalHangup
from sipstack.transactions import ClientTransaction
from sipstack.uac_build import ALLOW, SDP_CONTENT_TYPE, SUPPORTED

if TYPE_CHECKING:
    from sipstack.uac import UacCore

# RFC 4028 §10: the side that is not the refresher gives up at expiry minus min(32, SE/3).
_WATCHDOG_MARGIN_CAP = 32.0
# RFC 3261 §12.2.1.2: the responses to an in-dialog request that end the dialog.
_DIALOG_ENDING_CODES = frozenset({408, 481})


def supports_timer(message: Request | Response) -> bool:
    values = message.headers_all("supported") + message.headers_all("require")
    return any(value.strip().lower() == "timer" for value in values)


class SessionTimers:
    """Refreshes the session with UPDATE when we are the refresher, watches it otherwise."""

    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

    def _start_session_timer(self, leg: Leg, now: float) -> None:
        if leg.session_interval is not None:
            self._arm_session_timer(leg, now)

    def _arm_session_timer(self, leg: Leg, now: float) -> None:
        if leg.session_timer is not None:
            leg.session_timer.cancel()
            leg.session_timer = None
        interval = leg.session_interval
        if interval is None:
            leg.session_expires_at = None
            return
        leg.session_expires_at = now + interval  # every arming follows a (re)freshed session
        if leg.we_refresh:
            leg.session_timer = self._core.shared._schedule(
                now + interval / 2, self._on_refresh_due, leg
            )
        else:
            margin = min(_WATCHDOG_MARGIN_CAP, interval / 3)
            leg.session_timer = self._core.shared._schedule(
                now + interval - margin, self._on_session_expired, leg
            )

    def _on_refresh_due(self, leg: Leg, now: float) -> None:
        leg.session_timer = None
        if leg.ended or leg.state is not LegPhase.ESTABLISHED:
            return
        self._send_refresh(leg, now)

    def _send_refresh(self, leg: Leg, now: float) -> None:
        """Our refresh: UPDATE, or a re-INVITE with the unchanged SDP when the peer takes no
        UPDATE (RFC 4028 §7.4; RFC 3264 §8: same SDP, same o= version)."""
        interval = leg.session_interval
        if interval is None:
            return
        method = leg.refresh_method
        headers = [
            ("Contact", leg.contact),
            ("Supported", SUPPORTED),
            ("Session-Expires", f"{interval};refresher=uac"),
            ("Min-SE", str(leg.min_se)),
            ("User-Agent", self._core.shared.config.user_agent),
        ]
        body = b""
        if method == "INVITE":
            body = leg.local_sdp
            headers += [("Allow", ALLOW), ("Content-Type", SDP_CONTENT_TYPE)]
        leg.refresh.auth_headers = self._core._digest._credentials(
            leg,
            method=method,
            uri=self._core.shared._dialog_for(leg).request_uri_and_routes()[0],
            body=body,
        )
        headers.extend(leg.refresh.auth_headers)
        self._core.shared.stats.session_refreshes_sent += 1
        transaction, request = self._core.shared._start_in_dialog(leg, method, headers, now, body)
        leg.refresh.transaction = transaction
        if method == "INVITE":
            leg.reinvite_tx = transaction
            leg.reinvite_request = request
            leg.reinvite_ack = None

    def _on_reinvite_response(
        self, leg: Leg, transaction: ClientTransaction, response: Response, now: float
    ) -> None:
        """A response to our re-INVITE: every 2xx is ACKed (the same ACK for retransmissions),
        even once the leg is ending; failures were ACKed by the transaction."""
        code = response.status_code
        if code < 200:
            return
        if code < 300:
            if leg.reinvite_ack is None:
                self._core.shared._refresh_target(leg, response)  # the ACK goes to the new target
                leg.reinvite_ack = self._core.shared._build_ack_for(
                    leg, response.cseq[0], leg.refresh.auth_headers
                )
            else:
                self._core.shared.stats.absorbed_retransmissions += 1
            self._core.shared._send_ack_for(leg, leg.reinvite_ack)
        if transaction is leg.refresh.transaction:
            self._on_refresh_response(leg, transaction, response, now)

    def _glare_delay(self, leg: Leg) -> float:
        """§14.1 after a 491: 2.1-4 s for the Call-ID's owner (us, unless an SBC replaced it),
        else 0-2 s, in steps of 10 ms."""
        steps = int.from_bytes(self._core.shared._random_bytes(2), "big")
        if leg.call_id_adopted:
            return (steps % 201) / 100
        return 2.1 + (steps % 191) / 100

    def _on_session_expired(self, leg: Leg, now: float) -> None:
        leg.session_timer = None
        if leg.ended or leg.state is not LegPhase.ESTABLISHED:
            return
        self._core._endings._start_bye(
            leg,
            now,
            LocalHangup.SESSION_TIMER_EXPIRED,
            event_reason="session timer expired: no refresh from the peer",
        )

    def _on_refresh_response(
        self, leg: Leg, transaction: ClientTransaction, response: Response, now: float
    ) -> None:
        code = response.status_code
        if transaction is not leg.refresh.transaction or code < 200:
            return
        leg.refresh.transaction = None
        if leg.ended or leg.state is not LegPhase.ESTABLISHED:
            return
        if code < 300:
            self._on_refresh_accepted(leg, response, now)
            return
        if (
            code == 422
            and not leg.refresh.retried_422
            and self._raise_interval_to_min_se(leg, response)
        ):
            leg.refresh.retried_422 = True
            self._send_refresh(leg, now)
            return
        if (
            code in (401, 407)
            and self._core._digest._answer_challenge(leg, leg.refresh, response) is None
        ):
            self._send_refresh(leg, now)
            return
        if code in (405, 501):
            if leg.refresh_method == "UPDATE":
                leg.refresh_method = "INVITE"  # RFC 4028 §7.4: refresh with re-INVITE instead
                self._send_refresh(leg, now)
                return
            # Neither works: the peer cannot police the session either, so we keep the call
            # and stop refreshing rather than drop it.
            leg.session_interval = None
            return
        failure = f"session refresh failed: {code} {response.reason}"
        if code in _DIALOG_ENDING_CODES:
            self._fail_refresh(leg, now, failure)
            return
        # RFC 4028 §10, RFC 3261 §12.2.1.2: any other failure leaves the session valid until
        # it expires; a glare (§14.1) or an overload with Retry-After is tried again first.
        delay: float | None = None
        if code == 491:
            delay = self._glare_delay(leg)
        elif code in (500, 503):
            delay = retry_after_seconds(response.header("retry-after"))
        expires_at = leg.session_expires_at
        if delay is not None and (expires_at is None or now + delay < expires_at):
            leg.session_timer = self._core.shared._schedule(now + delay, self._on_refresh_due, leg)
            return
        self._keep_until_expiry(leg, now, failure)

    def _keep_until_expiry(self, leg: Leg, now: float, failure: str) -> None:
        """The refresh failed without ending the dialog: BYE when the session expires."""
        expires_at = leg.session_expires_at
        if expires_at is None or expires_at <= now:
            self._fail_refresh(leg, now, failure)
            return
        leg.refresh_failure = failure
        leg.session_timer = self._core.shared._schedule(
            expires_at, self._on_unrefreshed_expiry, leg
        )

    def _on_unrefreshed_expiry(self, leg: Leg, now: float) -> None:
        leg.session_timer = None
        if leg.ended or leg.state is not LegPhase.ESTABLISHED:
            return
        self._fail_refresh(
            leg, now, f"{leg.refresh_failure or 'session refresh failed'}; the session expired"
        )

    def _on_refresh_accepted(self, leg: Leg, response: Response, now: float) -> None:
        leg.refresh.accepted()
        leg.refresh_failure = None
        self._core.shared._refresh_target(leg, response)
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
        if not self._core.shared._raise_min_se(leg, response):
            return False
        leg.session_interval = max(leg.session_interval or 0, leg.min_se)
        return True

    def _on_refresh_timeout(self, leg: Leg, transaction: ClientTransaction, now: float) -> None:
        if transaction is not leg.refresh.transaction:
            return
        leg.refresh.transaction = None
        if not leg.ended and leg.state is LegPhase.ESTABLISHED:
            self._fail_refresh(leg, now, "session refresh got no response")

    def _fail_refresh(self, leg: Leg, now: float, error: str) -> None:
        self._core._endings._start_bye(
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
            interval = leg.session_interval
            if interval is None or leg.state is not LegPhase.ESTABLISHED:
                return 200, []
            # RFC 4028 §9: without Session-Expires the peer stops refreshing; rather than BYE a
            # healthy call at the old expiry, we take over the refreshes and say so.
            leg.we_refresh = True
            self._arm_session_timer(leg, now)
            return 200, [("Session-Expires", f"{interval};refresher=uas")]
        try:
            offered = SessionExpires.parse(value)
        except SipParseError:
            return 400, []
        if offered.delta < self._core.shared.config.min_se:
            return 422, [("Min-SE", str(self._core.shared.config.min_se))]
        peer_supports = supports_timer(request)
        # In the peer's request, "uac" names the peer and "uas" names us (RFC 4028 §9).
        refresher = offered.refresher or ("uac" if peer_supports else "uas")
        self._core.shared.stats.session_refreshes_received += 1
        if leg.state is LegPhase.ESTABLISHED:
            leg.session_interval = offered.delta
            leg.we_refresh = refresher == "uas"
            self._arm_session_timer(leg, now)
        headers = [("Session-Expires", f"{offered.delta};refresher={refresher}")]
        if refresher == "uac" or peer_supports:
            # RFC 4028 §9: a 2xx to a UAC that supports timer requires it, whoever refreshes.
            headers.append(("Require", "timer"))
        return 200, headers
