"""Answering the far end's requests: BYE, OPTIONS, INFO, UPDATE, re-INVITE, ACK, and the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.cdr import HangupBy
from sipstack.errors import SipParseError
from sipstack.events import LegEnded
from sipstack.headers.split import split_header_values
from sipstack.headers.via import Via
from sipstack.leg import Leg, LegPhase, UnackedResponse
from sipstack.message import Request, make_response
from sipstack.reason import LocalHangup, classify_reason, primary_reason
from sipstack.transport import Address, Transport
from sipstack.uac_base import ResponseKey
from sipstack.uac_build import ALLOW, ALLOWED_METHODS, SDP_CONTENT_TYPE, SUPPORTED
from sipstack.uac_invite import is_sdp, response_reasons
from sipstack.uac_sdp import answer_reoffer

if TYPE_CHECKING:
    from sipstack.uac import UacCore

# Option tags we implement (RFC 3261 §8.2.2.3): a Require naming anything else gets 420.
_SUPPORTED_OPTIONS = frozenset({"timer"})


class IncomingRequests:
    """Requests from peers: in-dialog ones are answered from the leg, others get 481/501."""

    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

    def _on_request(
        self, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        self._core.shared.stats.requests_received += 1
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        key = _response_key(request)
        sent = self._core.shared._sent_responses.get(key)
        if sent is not None:
            self._core.shared.stats.absorbed_retransmissions += 1
            self._core.shared._send(*sent)
            return
        to_tag = request.to_tag
        refusal: tuple[int, list[tuple[str, str]]] | None = None
        if method not in ALLOWED_METHODS:
            refusal = (501, [("Allow", ALLOW)])
        elif method != "CANCEL" and (unsupported := _unsupported_options(request)):
            refusal = (420, [("Unsupported", unsupported)])
        if refusal is not None:
            self._core.shared.stats.unsupported_requests += 1
            # §8.2.6.2: a response to a request without a To tag gets ours.
            tag = self._core.shared._ids.tag() if to_tag is None else None
            self._respond(request, refusal[0], source, transport, now, refusal[1], to_tag=tag)
            return
        if to_tag is None:
            self._on_out_of_dialog(request, source, transport, now)
            return
        leg = self._core.shared._legs.get(request.call_id or "")
        dialog = leg.dialog if leg is not None else None
        if (
            leg is None
            or dialog is None
            or leg.ended
            or to_tag != leg.from_tag
            or (request.from_tag or "") != leg.remote_tag
        ):
            self._core.shared.stats.unknown_dialog_requests += 1
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
        tag = self._core.shared._ids.tag()
        if request.method == "OPTIONS":
            self._respond(request, 200, source, transport, now, _capabilities(), to_tag=tag)
        elif request.method == "INVITE":
            self._respond(request, 403, source, transport, now, reason="Outbound Only", to_tag=tag)
        else:
            self._core.shared.stats.unknown_dialog_requests += 1
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
        """Send a response (§18.2.2 destination, RFC 3581 received/rport) and keep it for
        retransmitted requests; a failure to an INVITE over UDP is resent until its ACK."""
        extra = list(headers or ())
        extra.append(("Server", self._core.shared.config.user_agent))
        response = make_response(request, status, reason, to_tag=to_tag, headers=extra, body=body)
        destination = _stamp_top_via(response.headers, source, transport)
        data = response.to_bytes()
        self._core.shared._send(data, transport, destination)
        if not transport.is_connection_oriented:
            key = _response_key(request)
            sent = self._core.shared._sent_responses
            if key not in sent and len(sent) >= self._core.shared.config.max_remembered:
                del sent[next(iter(sent))]  # the oldest: its retransmission gets a new answer
            sent[key] = (data, transport, destination)
            # Timer J: a retransmitted request may arrive for 64*T1 (§17.2.2).
            self._core.shared._schedule(
                now + self._core.shared._timer_config.timer_b, self._forget_response, key
            )
            if request.method == "INVITE" and status >= 300:
                self._resend_failure_until_acked(key[:2], data, transport, destination, now)
        return data

    def _resend_failure_until_acked(
        self,
        key: tuple[str, str],
        data: bytes,
        transport: Transport,
        destination: Address,
        now: float,
    ) -> None:
        """§17.2.1: Timer G resends at T1 doubling to T2, Timer H gives up after 64*T1."""
        t1 = self._core.shared._timer_config.t1
        unacked = UnackedResponse(
            cseq=0,
            data=data,
            transport=transport,
            address=destination,
            interval=t1,
            until=now + self._core.shared._timer_config.timer_b,
        )
        failures = self._core.shared._unacked_failures
        previous = failures.pop(key, None)
        if previous is None and len(failures) >= self._core.shared.config.max_remembered:
            previous = failures.pop(next(iter(failures)))  # the oldest stops being resent
        if previous is not None and previous.timer is not None:
            previous.timer.cancel()
        unacked.timer = self._core.shared._schedule(now + t1, self._on_timer_g, key)
        self._core.shared._unacked_failures[key] = unacked

    def _on_timer_g(self, key: tuple[str, str], now: float) -> None:
        unacked = self._core.shared._unacked_failures.get(key)
        if unacked is None:
            return
        unacked.timer = None
        if now >= unacked.until:
            del self._core.shared._unacked_failures[
                key
            ]  # Timer H: the peer never ACKed; nothing to undo
            return
        self._core.shared.stats.retransmissions += 1
        self._core.shared._send(unacked.data, unacked.transport, unacked.address)
        unacked.interval = min(unacked.interval * 2, self._core.shared._timer_config.t2)
        when = min(now + unacked.interval, unacked.until)
        unacked.timer = self._core.shared._schedule(when, self._on_timer_g, key)

    def _forget_response(self, key: ResponseKey, now: float) -> None:
        self._core.shared._sent_responses.pop(key, None)

    def _on_remote_bye(
        self, leg: Leg, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        self._respond(request, 200, source, transport, now)
        if leg.state is LegPhase.ENDING:
            self._core._endings._finish_ending(
                leg, now
            )  # our BYE and theirs crossed; ours was first
            return
        if leg.state is LegPhase.ANSWERED:
            self._core.shared._send_ack(
                leg
            )  # complete the INVITE transaction before the dialog goes
        reasons = response_reasons(request)  # works on any message
        primary = primary_reason(reasons)
        self._core._endings._finish(
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
        if request.body and _offer_pending(leg):
            self._respond(request, 491, source, transport, now)  # offers crossing (RFC 3311)
            return
        accepted = self._accept_peer_refresh(leg, request, source, transport, now)
        if accepted is None:
            return
        answer, headers = accepted
        headers.append(("Contact", leg.contact))
        if answer:
            headers.append(("Content-Type", SDP_CONTENT_TYPE))
            leg.local_sdp = answer
        self._respond(request, 200, source, transport, now, headers, body=answer)

    def _on_reinvite(
        self, leg: Leg, request: Request, source: Address, transport: Transport, now: float
    ) -> None:
        if (
            leg.state is not LegPhase.ESTABLISHED
            or leg.pending_reinvite is not None
            or _offer_pending(leg)
        ):
            # §14.2: a re-INVITE while one of ours (or our answer to theirs) is pending.
            self._respond(request, 491, source, transport, now)
            return
        accepted = self._accept_peer_refresh(leg, request, source, transport, now)
        if accepted is None:
            return
        answer, headers = accepted
        # Without an offer in the re-INVITE, our 2xx offers our session as it is (RFC 3264 §8).
        body = answer or leg.local_sdp
        leg.local_sdp = body
        headers.extend(
            [
                ("Contact", leg.contact),
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
                ("Content-Type", SDP_CONTENT_TYPE),
            ]
        )
        data = self._respond(request, 200, source, transport, now, headers, body=body)
        if not transport.is_connection_oriented:
            t1 = self._core.shared._timer_config.t1
            pending = UnackedResponse(
                cseq=request.cseq[0],
                data=data,
                transport=transport,
                address=_response_destination(request, source, transport),
                interval=t1,
                until=now + self._core.shared._timer_config.timer_b,
            )
            pending.timer = self._core.shared._schedule(now + t1, self._on_reinvite_retransmit, leg)
            leg.pending_reinvite = pending

    def _accept_peer_refresh(
        self, leg: Leg, request: Request, source: Address, transport: Transport, now: float
    ) -> tuple[bytes, list[tuple[str, str]]] | None:
        """The checks a peer's UPDATE and re-INVITE share: (our SDP answer or b"", session
        headers for our 2xx) with the remote target refreshed, or None once rejected."""
        answer, failure = self._answer_to(leg, request)
        if failure is not None:
            self._respond(request, failure[0], source, transport, now, failure[1])
            return None
        status, headers = self._core._session_timers._on_peer_refresh(leg, request, now)
        if status != 200:
            self._respond(request, status, source, transport, now, headers)
            return None
        self._core.shared._refresh_target(leg, request)
        return answer, headers

    def _answer_to(
        self, leg: Leg, request: Request
    ) -> tuple[bytes, tuple[int, list[tuple[str, str]]] | None]:
        """(our SDP answer or b"" without an offer, None) or (b"", (failure status, headers))."""
        if not request.body:
            return b"", None
        if not is_sdp(request):
            return b"", (415, [("Accept", SDP_CONTENT_TYPE)])
        keep = leg.session_codec
        if keep is None:
            return b"", (488, [])
        try:
            answer = answer_reoffer(request.body, leg.local_sdp, keep)
        except SipParseError:
            return b"", (400, [])
        if answer is None:
            return b"", (488, [])
        return answer, None

    def _on_reinvite_retransmit(self, leg: Leg, now: float) -> None:
        """§13.3.1.4: resend our 2xx at T1 doubling to T2 until the ACK, for 64*T1 at most."""
        pending = leg.pending_reinvite
        if pending is None or leg.ended:
            return
        pending.timer = None
        if now >= pending.until:
            leg.pending_reinvite = None
            self._core._endings._start_bye(
                leg,
                now,
                LocalHangup.ERROR,
                error="no ACK for our 2xx to the re-INVITE",
                event_reason="no ACK for our 2xx to the re-INVITE",
            )
            return
        self._core.shared.stats.retransmissions += 1
        self._core.shared._send(pending.data, pending.transport, pending.address)
        pending.interval = min(pending.interval * 2, self._core.shared._timer_config.t2)
        when = min(now + pending.interval, pending.until)
        pending.timer = self._core.shared._schedule(when, self._on_reinvite_retransmit, leg)

    def _on_ack(self, request: Request) -> None:
        unacked = self._core.shared._unacked_failures.pop(
            (request.call_id or "", request.via_branch or ""), None
        )
        if unacked is not None:
            if unacked.timer is not None:
                unacked.timer.cancel()
            return
        leg = self._core.shared._legs.get(request.call_id or "")
        pending = leg.pending_reinvite if leg is not None else None
        if leg is not None and pending is not None and request.cseq[0] == pending.cseq:
            if pending.timer is not None:
                pending.timer.cancel()
            leg.pending_reinvite = None
        # Any other ACK (to a 2xx we retransmit no more, or to a non-2xx) needs nothing.


def _offer_pending(leg: Leg) -> bool:
    """Our re-INVITE (with its offer) still waits for its final response."""
    refresh = leg.refresh.transaction
    return refresh is not None and refresh.method == "INVITE"


def _unsupported_options(request: Request) -> str:
    """The Require option tags of a request we do not implement, comma-separated."""
    values = request.headers_all("require")
    if not values:
        return ""
    return ", ".join(tag for tag in values if tag.strip().lower() not in _SUPPORTED_OPTIONS)


def _stamp_top_via(
    headers: list[tuple[str, str]], source: Address, transport: Transport
) -> Address:
    """Add received/rport to the response's top Via (§18.2.1, RFC 3581 §4); where it goes."""
    for index, (name, value) in enumerate(headers):
        if name != "Via":
            continue
        try:
            elements = split_header_values(value)
            via = Via.parse(elements[0])
        except (SipParseError, IndexError):
            return source
        stamped = via
        if via.has_rport:
            stamped = stamped.with_param("received", source[0])
            stamped = stamped.with_param("rport", str(source[1]))
        elif via.host != source[0]:
            stamped = stamped.with_param("received", source[0])
        if stamped is not via:
            elements[0] = stamped.render()
            headers[index] = ("Via", ", ".join(elements))
        return _destination(via, source, transport)
    return source


def _capabilities() -> list[tuple[str, str]]:
    return [("Allow", ALLOW), ("Accept", SDP_CONTENT_TYPE), ("Supported", SUPPORTED)]


def _response_key(request: Request) -> ResponseKey:
    number, method = request.cseq
    return (request.call_id or "", request.via_branch or "", method, number)


def _response_destination(request: Request, source: Address, transport: Transport) -> Address:
    """Where a response to `request` goes (§18.2.2 with RFC 3581)."""
    top = request.header("via")
    if top is None:
        return source
    try:
        via = Via.parse_first(top)
    except SipParseError:
        return source
    return _destination(via, source, transport)


def _destination(via: Via, source: Address, transport: Transport) -> Address:
    """Connections and rport answer the source; else the source IP and the Via port."""
    if transport.is_connection_oriented or via.has_rport:
        return source
    return (source[0], via.port if via.port is not None else 5060)
