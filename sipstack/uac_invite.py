"""The INVITE side of a leg: sending it, its responses (1xx, 2xx, failures), auth, 422, CANCEL.

Over 600 lines: the client side of one INVITE transaction's outcomes and its CANCEL belong
together (a CANCEL waits for a 1xx, a 2xx stops it); splitting CANCEL out would split §9.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.cdr import HangupBy, HangupReason
from sipstack.dialog import Dialog
from sipstack.errors import RemoteProtocolError, SipParseError
from sipstack.events import (
    AnswerReceived,
    CallIdAdopted,
    EarlyMediaReceived,
    InviteRetried,
    LegCancelled,
    LegFailed,
    ProvisionalReceived,
    Redirected,
)
from sipstack.headers.name_addr import NameAddr
from sipstack.headers.retry_after import retry_after_seconds
from sipstack.headers.session_timer import SessionExpires
from sipstack.leg import Leg, LegInput, LegPhase
from sipstack.message import Request, Response
from sipstack.prack import (
    Reliability,
    ReliableProvisionals,
    asks_for_100rel,
    headers_with_100rel,
    is_reliable,
    rack_for,
)
from sipstack.reason import (
    LocalHangup,
    ReasonValue,
    classify_reason,
    parse_reason_header,
    primary_reason,
)
from sipstack.sdp import SdpAnswer, parse_answer
from sipstack.transactions import ClientTransaction
from sipstack.transport import Address, Transport
from sipstack.uac_base import CONNECTION_LOST, CONNECTION_LOST_REASON
from sipstack.uac_build import SDP_CONTENT_TYPE, build_cancel, build_failure_ack, build_invite
from sipstack.uri import SipUri

if TYPE_CHECKING:
    from sipstack.uac import UacCore

UNUSABLE_SDP = "unusable SDP answer"


def is_sdp(message: Request | Response) -> bool:
    if not message.body:
        return False
    content_type = message.header("content-type")
    return content_type is None or content_type.split(";", 1)[0].strip().lower() == SDP_CONTENT_TYPE


def response_reasons(message: Request | Response) -> list[ReasonValue]:
    """Every readable Reason value of a message; unreadable ones are skipped, not fatal."""
    values: list[ReasonValue] = []
    for element in message.headers_all("reason"):
        try:
            values.extend(parse_reason_header(element))
        except SipParseError:
            continue
    return values


def redirect_targets(response: Response) -> str:
    """The Contact URIs of a 3xx, comma-separated in the order given; unreadable ones skipped."""
    targets: list[str] = []
    for value in response.headers_all("contact"):
        try:
            targets.append(NameAddr.parse(value).uri.render())
        except SipParseError:
            continue
    return ", ".join(targets)


def ordered_redirect_targets(response: Response) -> list[SipUri]:
    """The sip:/sips: Contacts of a 3xx, highest q first, then in the order given (RFC 3261
    §8.1.3.4, §16.6: q defaults to 1); unreadable ones and other schemes skipped."""
    found: list[tuple[float, int, SipUri]] = []
    for value in response.headers_all("contact"):
        try:
            contact = NameAddr.parse(value)
        except SipParseError:
            continue
        if not isinstance(contact.uri, SipUri):
            continue
        q_text = next((v for k, v in contact.params if k.lower() == "q"), None)
        try:
            q = float(q_text) if q_text is not None else 1.0
        except ValueError:
            q = 1.0
        found.append((-q, len(found), contact.uri.without_headers()))
    return [uri for _, _, uri in sorted(found, key=lambda item: (item[0], item[1]))]


class InviteHandling:
    """Sends INVITEs and CANCELs and reacts to everything the INVITE transaction reports."""

    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

    def _send_invite(self, leg: Leg, now: float) -> None:
        if leg.invite_head is None or leg.invite_tail is None:
            return
        branch = self._core.shared._ids.branch()
        via = self._core.shared._via_for(leg.transport, branch)
        data = build_invite(
            leg.invite_head,
            leg.invite_tail,
            request_uri=leg.request_uri,
            via=via,
            cseq=leg.invite_cseq,
            auth_headers=leg.invite.auth_headers,
            body=leg.offer_body,
        )
        leg.invite_via = via
        leg.invite.transaction = self._start_toward_invite_hop(leg, "INVITE", branch, data, now)
        self._core._strays._remember_invite(leg.call_id, leg.from_tag, leg.invite_cseq, now)

    def build_failure_ack(self, transaction: ClientTransaction, response: Response) -> bytes:
        leg: Leg = transaction.owner
        reinvite = leg.reinvite_request
        if transaction is leg.reinvite_tx and reinvite is not None:
            return build_failure_ack(
                request_uri=reinvite.uri,
                via=reinvite.header("via") or "",
                from_header=reinvite.header("from") or "",
                call_id=reinvite.call_id or leg.call_id,
                response=response,
                routes=reinvite.headers_all("route"),
            )
        via = (
            leg.invite_via
            if transaction.branch in leg.invite_via
            else self._core.shared._via_for(transaction.transport, transaction.branch)
        )
        return build_failure_ack(
            request_uri=leg.request_uri,
            via=via,
            from_header=leg.from_header,
            call_id=leg.call_id,  # the INVITE's (Call-IDs are only adopted from a 2xx)
            response=response,
        )

    # -- responses ----------------------------------------------------------------------------

    def _on_invite_response(
        self,
        leg: Leg,
        transaction: ClientTransaction,
        response: Response,
        source: Address,
        now: float,
    ) -> None:
        code = response.status_code
        if 200 <= code < 300:
            self._on_answer(leg, transaction, response, source, now)
        elif transaction is not leg.invite.transaction:
            return  # the answer to an INVITE we already re-sent with credentials
        elif code < 200:
            self._on_provisional(leg, response, now)
        else:
            self._on_invite_failure(leg, response, now)

    def _on_provisional(self, leg: Leg, response: Response, now: float) -> None:
        if leg.state is not LegPhase.CALLING and leg.state is not LegPhase.RINGING:
            return
        config = self._core.config
        reliable = (config.prack or config.require_100rel or leg.prack_on) and is_reliable(
            response
        )
        if reliable and not self._prack(leg, response, now):
            return  # a retransmission, out of order, or unusable: not processed (RFC 3262 §4)
        if leg.first_provisional_at is None and response.status_code != 100:
            # 100 Trying is hop-by-hop: only the far end's 18x measures post-dial delay.
            leg.first_provisional_at = now
        leg.advance(LegInput.PROVISIONAL)  # any 1xx, 100 included, lets a CANCEL go (§9.1)
        has_sdp = is_sdp(response)
        new_early_media = False
        if has_sdp:
            # The 2xx may omit the answer its early dialog already gave.
            if leg.early_sdp is None:
                leg.early_sdp = {}
            new_early_media = (response.to_tag or "") not in leg.early_sdp
            leg.early_sdp[response.to_tag or ""] = response.body
        provisional = ProvisionalReceived(
            call_id=leg.call_id, correlation_id=leg.correlation_id, scenario=leg.scenario,
            at=now, status_code=response.status_code, reason=response.reason, has_sdp=has_sdp,
        )  # fmt: skip
        self._core.shared._emit(provisional)
        if new_early_media:
            self._core.shared._emit(
                EarlyMediaReceived(
                    call_id=leg.call_id, correlation_id=leg.correlation_id,
                    scenario=leg.scenario, at=now, status_code=response.status_code,
                    reason=response.reason, to_tag=response.to_tag or "", reliable=reliable,
                )
            )  # fmt: skip
        if leg.cancel_requested and not leg.cancel_sent:
            self._send_cancel(leg, now)

    def _prack(self, leg: Leg, response: Response, now: float) -> bool:
        """PRACK a reliable 1xx in its early dialog (RFC 3262 §7.2) when it is the next of its
        early dialog's; True when the 1xx is to be processed."""
        try:
            rack = rack_for(response)
            if leg.reliable is None:
                leg.reliable = ReliableProvisionals()
            decision = leg.reliable.accept(response.to_tag or "", rack.rseq)
        except (RemoteProtocolError, ValueError):
            return False
        if decision is not Reliability.PRACK:
            return False
        early = Dialog.from_answer(
            response,
            call_id=leg.call_id,
            local_header=leg.from_header,
            remote_header_without_tag=leg.to_header,
            invite_cseq=max(leg.invite_cseq, leg.prack_cseq),
            fallback_target=leg.request_uri,
            fallback_hop=self._core.shared._fallback_hop(leg),
        )
        branch = self._core.shared._ids.branch()
        hop = early.next_hop
        cseq = early.next_cseq()
        request = early.build_request(
            "PRACK",
            via=self._core.shared._via_for(hop.transport, branch),
            cseq=cseq,
            extra_headers=[("RAck", rack.render())],
        )
        leg.prack_cseq = cseq
        self._core.shared._transactions.start(
            method="PRACK", branch=branch, data=request.to_bytes(), transport=hop.transport,
            address=hop.address, owner=leg, now=now,
        )  # fmt: skip
        return True

    def _on_answer(
        self,
        leg: Leg,
        transaction: ClientTransaction,
        response: Response,
        source: Address,
        now: float,
    ) -> None:
        if leg.state.answered or leg.ended:
            self._on_repeated_answer(leg, response, source, now)
            return
        if transaction is not leg.invite.transaction:
            self._core._strays._end_orphan_answer(response, transaction.transport, source, now)
            return
        leg.final_status_code = response.status_code
        leg.answered_at = now
        self._stop_cancelling(leg)
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
            leg.ring_timer = None
        dialog = Dialog.from_answer(
            response,
            call_id=leg.call_id,
            local_header=leg.from_header,
            remote_header_without_tag=leg.to_header,
            invite_cseq=leg.invite_cseq,
            fallback_target=leg.request_uri,
            fallback_hop=self._core.shared._fallback_hop(leg),
        )
        dialog.local_cseq = max(dialog.local_cseq, leg.prack_cseq)  # after our PRACKs
        leg.dialog = dialog
        leg.remote_tag = response.to_tag or ""
        self._adopt_call_id(leg, response.call_id, now)
        leg.ack_data = self._core.shared._build_ack(leg)
        leg.advance(LegInput.ANSWER)
        early = leg.early_sdp or {}
        body = response.body if is_sdp(response) else early.get(leg.remote_tag, b"")
        leg.free_invite_parts()
        if leg.lost_connection:
            # The 2xx crossed the CANCEL sent again after the connection broke: hang up.
            self._core._endings._start_bye(
                leg,
                now,
                LocalHangup.ERROR,
                error=CONNECTION_LOST,
                event_reason=f"answered after its {CONNECTION_LOST}",
                reason_value=CONNECTION_LOST_REASON,
            )
            return
        if leg.cancel_requested:
            # The 2xx crossed our CANCEL: the call exists now, so ACK it and hang up at once.
            hangup = LocalHangup.RING_TIMEOUT if leg.cancel_by_ring_timeout else LocalHangup.NORMAL
            self._core._endings._start_bye(
                leg, now, hangup, event_reason="answered while being cancelled"
            )
            return
        self._negotiate_session_timer(leg, response)
        answer = _usable_answer(body)
        if answer is None:
            self._core._endings._start_bye(
                leg, now, LocalHangup.ERROR, error=UNUSABLE_SDP, event_reason=UNUSABLE_SDP
            )
            return
        leg.codec = answer.codec_name
        leg.session_codec = answer.codec
        leg.remote_rtp = answer.remote_rtp
        leg.srtp = answer.is_srtp and answer.crypto is not None
        leg.answer_timer = self._core.shared._schedule(
            now + self._core.shared._timer_config.timer_b, self._on_answer_deadline, leg
        )
        self._core.shared._emit(
            AnswerReceived(
                call_id=leg.call_id,
                correlation_id=leg.correlation_id,
                status_code=response.status_code,
                sdp=body,
                source=source,
                at=now,
            )
        )

    def _on_repeated_answer(
        self, leg: Leg, response: Response, source: Address, now: float
    ) -> None:
        """A retransmitted 2xx gets the same ACK again; a 2xx from another fork is ended."""
        if leg.remote_tag and response.to_tag != leg.remote_tag:
            self._core._strays._end_orphan_answer(response, leg.transport, source, now)
            return
        if leg.state is LegPhase.ANSWERED:
            return  # ACK waits for confirm_answer; the peer keeps retransmitting until then
        self._core.shared.stats.absorbed_retransmissions += 1
        self._core.shared._send_ack(leg)

    def _adopt_call_id(self, leg: Leg, new_call_id: str | None, now: float) -> None:
        """An SBC may answer with another Call-ID: re-key the leg unless that one is taken."""
        old = leg.call_id
        if not new_call_id or new_call_id == old or new_call_id in self._core.shared._legs:
            return
        del self._core.shared._legs[old]
        self._core.shared._legs[new_call_id] = leg
        leg.call_id = new_call_id
        leg.call_id_adopted = True
        if leg.dialog is not None:
            leg.dialog.call_id = new_call_id
        self._core.shared._emit(
            CallIdAdopted(
                old_call_id=old,
                new_call_id=new_call_id,
                correlation_id=leg.correlation_id,
                at=now,
            )
        )

    def _on_answer_deadline(self, leg: Leg, now: float) -> None:
        leg.answer_timer = None
        if leg.state is LegPhase.ANSWERED and not leg.ended:
            self._core._endings._start_bye(
                leg,
                now,
                LocalHangup.ERROR,
                error="answer not confirmed in time (pre_ack)",
                event_reason="answer not confirmed in time",
            )

    def _on_invite_failure(self, leg: Leg, response: Response, now: float) -> None:
        if leg.state.answered or leg.ended:
            return
        code = response.status_code
        leg.final_status_code = code
        leg.retry_after = retry_after_seconds(response.header("retry-after"))  # for back-pressure
        error: str | None = None
        if not leg.cancel_requested:
            if code in (401, 407):
                error = self._core._digest._answer_challenge(leg, leg.invite, response)
                if error is None:
                    self._resend_invite(leg, now)
                    return
            elif (code == 422 and self._retry_after_422(leg, response, now)) or (
                code == 421 and self._retry_with_100rel(leg, response, now)
            ):
                return
            if 300 <= code < 400 and self._follow_redirect(leg, response, now):
                return
        reasons = response_reasons(response)
        primary = primary_reason(reasons)
        if leg.cancel_requested:
            self._core._endings._finish(
                leg,
                LegCancelled,
                now,
                event_reason=response.reason,
                hangup_reason=self._cancelled_class(leg),
                hangup_by=HangupBy.LOCAL,
                reason_value=primary,
            )
            return
        # The far end's Reason says why (none: normal); the status code is the disposition's.
        # A challenge we could not answer is our error.
        hangup_reason = HangupReason.ERROR if error else classify_reason(reasons)
        event_reason = response.reason
        if 300 <= code < 400:
            # Not followed: no usable Contact, all tried, or CoreConfig.max_redirects reached.
            targets = redirect_targets(response) or "no Contact"
            event_reason = f"{response.reason}; redirected to {targets}"
            error = error or f"redirect not followed: {targets}"
        self._core._endings._finish(
            leg,
            LegFailed,
            now,
            event_reason=event_reason,
            hangup_reason=hangup_reason,
            hangup_by=HangupBy.REMOTE,
            error=error,
            reason_value=primary,
        )

    def _follow_redirect(self, leg: Leg, response: Response, now: float) -> bool:
        """RFC 3261 §8.1.3.4: a new INVITE (new branch, CSeq + 1, same Call-ID and From tag)
        to the best Contact of the 3xx not yet tried for this leg, at most
        CoreConfig.max_redirects times. The first hop stays the outbound proxy when the leg
        has one (its address is not the Request-URI's); else it is the new target's."""
        if len(leg.redirects) >= self._core.config.max_redirects or leg.invite_head is None:
            return False
        tried = {leg.first_request_uri or leg.request_uri, *leg.redirects}
        current = SipUri.parse(leg.request_uri) if leg.request_uri.startswith("sip") else None
        direct = current is not None and leg.address == (
            current.host, current.port or leg.transport.default_port
        )
        for uri in ordered_redirect_targets(response):
            text = uri.render()
            if text in tried or (uri.scheme == "sips") != (leg.transport is Transport.TLS):
                continue
            leg.first_request_uri = leg.first_request_uri or leg.request_uri
            leg.redirects = (*leg.redirects, text)
            leg.request_uri = text
            if direct:
                leg.address = (uri.host, uri.port or leg.transport.default_port)
            self._core.shared._emit(
                Redirected(
                    call_id=leg.call_id, correlation_id=leg.correlation_id,
                    scenario=leg.scenario, at=now, status_code=response.status_code,
                    reason=response.reason, target=text,
                )
            )
            leg.final_status_code = None
            leg.retry_after = None
            self._resend_invite(leg, now)
            return True
        return False

    def _retry_after_422(self, leg: Leg, response: Response, now: float) -> bool:
        """RFC 4028 §7.4: raise Session-Expires to the peer's Min-SE and try once more."""
        if leg.invite.retried_422 or leg.invite_tail is None:
            return False
        if not self._core.shared._raise_min_se(leg, response):
            return False
        interval = max(leg.min_se, leg.offer_session_expires or 0)
        leg.invite.retried_422 = True
        leg.offer_session_expires = interval
        tail = [h for h in leg.invite_tail if h[0] not in ("Session-Expires", "Min-SE")]
        at = next((i for i, h in enumerate(tail) if h[0] == "User-Agent"), len(tail))
        tail[at:at] = [("Session-Expires", str(interval)), ("Min-SE", str(leg.min_se))]
        leg.invite_tail = tuple(tail)
        self._resend_invite(leg, now)
        return True

    def _retry_with_100rel(self, leg: Leg, response: Response, now: float) -> bool:
        """RFC 3262 §4: a 421 requiring 100rel gets one new INVITE that supports and requires
        it (same leg and Call-ID, CSeq + 1); its reliable 1xx are then PRACKed."""
        config = self._core.config
        if (
            not config.retry_421 or config.require_100rel or leg.prack_on
            or leg.invite_tail is None or not asks_for_100rel(response)
        ):  # fmt: skip
            return False
        leg.prack_on = True
        leg.invite_tail = headers_with_100rel(leg.invite_tail)
        self._core.shared.stats.retries_421 += 1
        self._resend_invite(leg, now)
        self._core.shared._emit(
            InviteRetried(
                call_id=leg.call_id, correlation_id=leg.correlation_id, scenario=leg.scenario,
                at=now, status_code=421, extension="100rel",
                reason=f"{response.reason}: sent again with Require: 100rel",
            )
        )  # fmt: skip
        return True

    def _resend_invite(self, leg: Leg, now: float) -> None:
        """The same INVITE with CSeq + 1, a new branch and fresh credentials (or interval)."""
        leg.invite_cseq += 1
        leg.invite.auth_headers = self._core._digest._credentials(
            leg, method="INVITE", uri=leg.request_uri, body=leg.offer_body
        )
        leg.advance(LegInput.INVITE_RESENT)
        self._send_invite(leg, now)

    def _on_invite_timeout(
        self, leg: Leg, transaction: ClientTransaction, now: float, *, transport_error: bool
    ) -> None:
        if transaction is not leg.invite.transaction or leg.ended or leg.state.answered:
            return
        if leg.cancel_requested:
            self._core._endings._finish(
                leg,
                LegCancelled,
                now,
                event_reason="no final response after CANCEL",
                hangup_reason=self._cancelled_class(leg),
                hangup_by=HangupBy.LOCAL,
                error=CONNECTION_LOST if transport_error else None,
            )
            return
        self._core._endings._finish(
            leg,
            LegFailed,
            now,
            event_reason=CONNECTION_LOST if transport_error else "no response (Timer B)",
            hangup_reason=HangupReason.ERROR,
            hangup_by=HangupBy.LOCAL,
            error=CONNECTION_LOST if transport_error else "no response to INVITE (Timer B)",
        )

    # -- CANCEL -------------------------------------------------------------------------------

    def _request_cancel(self, leg: Leg, now: float, *, ring_timeout: bool) -> None:
        """Send the CANCEL now after a 1xx, else queue it until the first 1xx (§9.1 MUST NOT).

        A queued CANCEL never goes out on a deadline: a 2xx meanwhile is ACKed and BYEd, and the
        INVITE's Timer B ends a leg that never heard a 1xx as cancelled."""
        if leg.cancel_requested or leg.state.answered or leg.ended:
            return
        leg.cancel_requested = True
        leg.cancel_by_ring_timeout = ring_timeout
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
            leg.ring_timer = None
        if leg.state is LegPhase.RINGING:
            self._send_cancel(leg, now)

    def _send_cancel(self, leg: Leg, now: float) -> None:
        invite_tx = leg.invite.transaction
        if leg.cancel_sent or leg.state.answered or leg.ended or invite_tx is None:
            return
        leg.cancel_sent = True
        if leg.cancel_timer is not None:
            leg.cancel_timer.cancel()
        if self._core.shared._transactions.find(invite_tx.branch, "CANCEL") is None:
            leg.cancel_tx = self._start_cancel(
                leg, invite_tx, self._core._endings._cancel_reason(leg), now
            )
        # §9.1: without a final response 64*T1 after the CANCEL, the INVITE counts as cancelled.
        leg.cancel_timer = self._core.shared._schedule(
            now + self._core.shared._timer_config.timer_b, self._on_cancel_expired, leg
        )

    @staticmethod
    def _cancelled_class(leg: Leg) -> HangupReason:
        """The hangup class of a leg we cancelled: our ring timer's expiry, else normal."""
        return HangupReason.TIMER_EXPIRED if leg.cancel_by_ring_timeout else HangupReason.NORMAL

    def _start_cancel(
        self, leg: Leg, invite_tx: ClientTransaction, reason: ReasonValue, now: float
    ) -> ClientTransaction:
        """The CANCEL transaction of the INVITE in flight (§9.1: its branch, URI and CSeq)."""
        data = build_cancel(
            request_uri=leg.request_uri,
            invite_via=leg.invite_via,
            from_header=leg.from_header,
            to_header=leg.to_header,
            call_id=leg.call_id,
            cseq=leg.invite_cseq,
            reason=reason.render(),
            user_agent=self._core.shared.config.user_agent,
        )
        return self._start_toward_invite_hop(leg, "CANCEL", invite_tx.branch, data, now)

    def _start_toward_invite_hop(
        self, leg: Leg, method: str, branch: str, data: bytes, now: float
    ) -> ClientTransaction:
        """A transaction to the leg's first hop: the INVITE's, and its CANCEL's (§9.1)."""
        return self._core.shared._transactions.start(
            method=method,
            branch=branch,
            data=data,
            transport=leg.transport,
            address=leg.address,
            owner=leg,
            now=now,
        )

    def _on_cancel_expired(self, leg: Leg, now: float) -> None:
        leg.cancel_timer = None
        if leg.ended or leg.state.answered:
            return
        self._core._endings._finish(
            leg,
            LegCancelled,
            now,
            event_reason="no final response after CANCEL",
            hangup_reason=self._cancelled_class(leg),
            hangup_by=HangupBy.LOCAL,
        )

    def _stop_cancelling(self, leg: Leg) -> None:
        """An answer arrived: no CANCEL may go out or be retransmitted any more."""
        if leg.cancel_timer is not None:
            leg.cancel_timer.cancel()
            leg.cancel_timer = None
        self._core.shared._abandon(leg.cancel_tx)
        leg.cancel_tx = None

    def _on_ring_timeout(self, leg: Leg, now: float) -> None:
        leg.ring_timer = None
        if leg.state is LegPhase.CALLING or leg.state is LegPhase.RINGING:
            self._request_cancel(leg, now, ring_timeout=True)

    # -- session timer negotiation (the timers themselves live in uac_session_timer) ----------

    def _negotiate_session_timer(self, leg: Leg, response: Response) -> None:
        """RFC 4028 §7.2: the 2xx says the interval and who refreshes (absent: we do)."""
        allowed = response.headers_all("allow")
        if allowed and "UPDATE" not in {method.strip().upper() for method in allowed}:
            leg.refresh_method = "INVITE"  # RFC 4028 §7.4: UPDATE only where it is allowed
        value = response.header("session-expires")
        if value is None:
            return
        try:
            session_expires = SessionExpires.parse(value)
        except SipParseError:
            return
        if session_expires.delta < 1:
            return
        leg.session_interval = session_expires.delta
        leg.we_refresh = session_expires.refresher != "uas"


def _usable_answer(body: bytes) -> SdpAnswer | None:
    if not body:
        return None
    try:
        answer = parse_answer(body)
    except SipParseError:
        return None
    if answer.rejected or answer.codec is None:
        return None
    return answer
