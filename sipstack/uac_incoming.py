"""Answering the far end's requests: BYE, OPTIONS, INFO, UPDATE, re-INVITE, ACK, and the rest."""

from __future__ import annotations

from sipstack.cdr import HangupBy
from sipstack.errors import SipParseError
from sipstack.events import LegEnded
from sipstack.headers.via import Via
from sipstack.leg import Leg, LegState, PendingReinviteAnswer
from sipstack.message import Request, make_response
from sipstack.reason import LocalHangup, classify_reason, primary_reason
from sipstack.transport import Address, Transport
from sipstack.uac_base import ResponseKey
from sipstack.uac_build import ALLOW, ALLOWED_METHODS, SDP_CONTENT_TYPE, SUPPORTED
from sipstack.uac_invite import response_reasons
from sipstack.uac_session_timer import SessionTimers


class IncomingRequests(SessionTimers):
    """Requests from peers: in-dialog ones are answered from the leg, others get 481/501."""

    def _on_request(
        self, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        self.stats.requests_received += 1
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        key = _response_key(request)
        sent = self._sent_responses.get(key)
        if sent is not None:
            self.stats.absorbed_retransmissions += 1
            self._send(*sent)
            return
        if method not in ALLOWED_METHODS:
            self.stats.unsupported_requests += 1
            self._respond(request, 501, source, transport, now, [("Allow", ALLOW)])
            return
        to_tag = request.to_tag
        if to_tag is None:
            self._on_out_of_dialog(request, source, transport, now)
            return
        leg = self._legs.get(request.call_id or "")
        dialog = leg.dialog if leg is not None else None
        if (
            leg is None
            or dialog is None
            or leg.ended
            or to_tag != leg.from_tag
            or (request.from_tag or "") != leg.remote_tag
        ):
            self.stats.unknown_dialog_requests += 1
            self._respond(request, 481, source, transport, now)
            return
        if method == "CANCEL":
            # Our answers to re-INVITEs are immediate: nothing is left to cancel (§9.2).
            self._respond(request, 200, source, transport, now)
            return
        if not dialog.accepts_remote_cseq(request.cseq[0]):
            self._respond(request, 500, source, transport, now, reason="CSeq out of order")
            return
        if method == "BYE":
            self._on_remote_bye(leg, request, source, transport, now)
        elif method == "OPTIONS":
            self._respond(request, 200, source, transport, now, _capabilities())
        elif method == "INFO":
            self._respond(request, 200, source, transport, now)
        elif method == "UPDATE":
            self._on_remote_update(leg, request, source, transport, now)
        elif method == "INVITE":
            self._on_reinvite(leg, request, source, transport, now)

    def _on_out_of_dialog(
        self, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        tag = self._ids.tag()
        if request.method == "OPTIONS":
            self._respond(request, 200, source, transport, now, _capabilities(), to_tag=tag)
        elif request.method == "INVITE":
            self._respond(request, 403, source, transport, now, reason="Outbound Only", to_tag=tag)
        else:
            self.stats.unknown_dialog_requests += 1
            self._respond(request, 481, source, transport, now, to_tag=tag)

    def _respond(
        self,
        request: Request,
        status: int,
        source: Address,
        transport: Transport,
        now: float,
        headers: list[tuple[str, str]] | None = None,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        body: bytes = b"",
    ) -> bytes:
        """Send a response (§18.2.2 destination) and keep it for retransmitted requests."""
        extra = list(headers or ())
        extra.append(("Server", self.config.user_agent))
        data = make_response(
            request, status, reason, to_tag=to_tag, headers=extra, body=body
        ).to_bytes()
        destination = _response_destination(request, source, transport)
        self._send(data, transport, destination)
        if not transport.is_connection_oriented:
            key = _response_key(request)
            self._sent_responses[key] = (data, transport, destination)
            # Timer J: a retransmitted request may arrive for 64*T1 (§17.2.2).
            self._schedule(now + self._timer_config.timer_b, self._forget_response, key)
        return data

    def _forget_response(self, key: ResponseKey, now: float) -> None:
        self._sent_responses.pop(key, None)

    def _on_remote_bye(
        self, leg: Leg, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        self._respond(request, 200, source, transport, now)
        if leg.state is LegState.ENDING:
            self._finish_ending(leg, now)  # our BYE and theirs crossed; ours was first
            return
        if leg.state is LegState.ANSWERED:
            self._send_ack(leg)  # complete the INVITE transaction before the dialog goes
        reasons = response_reasons(request)  # works on any message
        primary = primary_reason(reasons)
        self._finish(
            leg,
            LegEnded,
            now,
            event_reason=(primary.text if primary and primary.text else "BYE from the peer"),
            hangup_reason=classify_reason(reasons),
            hangup_by=HangupBy.REMOTE,
            reason_value=primary,
        )

    def _on_remote_update(
        self, leg: Leg, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        status, headers = self._on_peer_refresh(leg, request, now)
        if status != 200:
            self._respond(request, status, source, transport, now, headers)
            return
        self._refresh_remote_target(leg, request)
        headers.append(("Contact", leg.contact))
        body = b""
        if request.body:
            # An offer in UPDATE: our session is unchanged, so the answer is our offer as is.
            headers.append(("Content-Type", SDP_CONTENT_TYPE))
            body = leg.offer_body
        self._respond(request, 200, source, transport, now, headers, body=body)

    def _on_reinvite(
        self, leg: Leg, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        if leg.state is not LegState.ESTABLISHED or leg.pending_reinvite is not None:
            self._respond(request, 491, source, transport, now)
            return
        status, headers = self._on_peer_refresh(leg, request, now)
        if status != 200:
            self._respond(request, status, source, transport, now, headers)
            return
        self._refresh_remote_target(leg, request)
        headers.extend(
            [
                ("Contact", leg.contact),
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
                ("Content-Type", SDP_CONTENT_TYPE),
            ]
        )
        data = self._respond(request, 200, source, transport, now, headers, body=leg.offer_body)
        if not transport.is_connection_oriented:
            t1 = self._timer_config.t1
            pending = PendingReinviteAnswer(
                cseq=request.cseq[0],
                data=data,
                transport=transport,
                address=_response_destination(request, source, transport),
                interval=t1,
                until=now + self._timer_config.timer_b,
            )
            pending.timer = self._schedule(now + t1, self._on_reinvite_retransmit, leg)
            leg.pending_reinvite = pending

    def _on_reinvite_retransmit(self, leg: Leg, now: float) -> None:
        """§13.3.1.4: resend our 2xx at T1 doubling to T2 until the ACK, for 64*T1 at most."""
        pending = leg.pending_reinvite
        if pending is None or leg.ended:
            return
        pending.timer = None
        if now >= pending.until:
            leg.pending_reinvite = None
            self._start_bye(
                leg,
                now,
                LocalHangup.ERROR,
                error="no ACK for our 2xx to the re-INVITE",
                event_reason="no ACK for our 2xx to the re-INVITE",
            )
            return
        self.stats.retransmissions += 1
        self._send(pending.data, pending.transport, pending.address)
        pending.interval = min(pending.interval * 2, self._timer_config.t2)
        when = min(now + pending.interval, pending.until)
        pending.timer = self._schedule(when, self._on_reinvite_retransmit, leg)

    def _on_ack(self, request: Request) -> None:
        leg = self._legs.get(request.call_id or "")
        pending = leg.pending_reinvite if leg is not None else None
        if leg is not None and pending is not None and request.cseq[0] == pending.cseq:
            if pending.timer is not None:
                pending.timer.cancel()
            leg.pending_reinvite = None
        # Any other ACK (to a 2xx we retransmit no more, or to a non-2xx) needs nothing.

    def _refresh_remote_target(self, leg: Leg, request: Request) -> None:
        contact = request.header("contact")
        if contact is not None and leg.dialog is not None:
            leg.dialog.update_remote_target(contact, self._fallback_hop(leg))


def _capabilities() -> list[tuple[str, str]]:
    return [("Allow", ALLOW), ("Accept", SDP_CONTENT_TYPE), ("Supported", SUPPORTED)]


def _response_key(request: Request) -> ResponseKey:
    number, method = request.cseq
    return (request.call_id or "", request.via_branch or "", method, number)


def _response_destination(request: Request, source: Address, transport: Transport) -> Address:
    """§18.2.2 with RFC 3581: connections and rport answer the source; else the Via port."""
    if transport.is_connection_oriented:
        return source
    top = request.header("via")
    if top is None:
        return source
    try:
        via = Via.parse_first(top)
    except SipParseError:
        return source
    if via.has_rport or via.port is None:
        return source if via.has_rport else (source[0], 5060)
    return (source[0], via.port)
