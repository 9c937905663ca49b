"""Building the requests of an outbound leg: the initial INVITE from a DialRequest, CANCEL, ACK.

Advertise only what we listen on (RFC 3261 §8.1.1.8: the Contact is where the far end sends
new requests; §18.2.1: the Via sent-by is where responses go). A TLS leg needs a TLS address in
CoreConfig.local_addresses (the shell puts its TLS listener's there); without one, dialing
TLS is refused with a LocalProtocolError naming the missing listener, instead of the old
silent fallback to port 5061 where nothing listens, unless CoreConfig.tls_connection_reuse
says the far end reuses our connection (RFC 5923: our TLS Via carries `;alias`; the shell sets
it when it has no TLS listener, so `outbound call` without --tls-listen still works through an
alias-honouring proxy). Then host:5061 in Via and Contact is an alias name for that
connection, not a listener: stated, chosen, and only then. Why not the outbound
connection's own local address (RFC 5923 alias, connection reuse)? The sans-IO core lays
out the INVITE before that connection exists, so it cannot know the ephemeral port; and that
address would stop being true when the connection closes, which the shell allows for live
calls (an idle connection closes, the call keeps going): a far end sending its BYE or
re-INVITE to that Contact would find nothing. `;alias` on our TCP/TLS Via still lets it
reuse the connection while it lives.
Likewise an INVITE too big for UDP (§18.1.1) only moves to TCP when there is a TCP address to
name in its Via and Contact; otherwise it stays on UDP, as `udp_only` would keep it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.headers.history import render_diversion, render_history_info
from sipstack.headers.name_addr import NameAddr
from sipstack.message import Request, Response
from sipstack.sdp import DEFAULT_CODECS, build_offer
from sipstack.target import parse_hostport, resolve_transport
from sipstack.transport import Address, Transport, transport_for_request
from sipstack.uri import SipUri, TelUri, format_hostport, parse_uri

RandomBytes = Callable[[int], bytes]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
ALLOWED_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO"})
SUPPORTED = "timer"  # only what we implement: no 100rel, no replaces
MAX_FORWARDS = "70"
BRANCH_MAGIC = "z9hG4bK"
SDP_CONTENT_TYPE = "application/sdp"


# The branch of the real Via has this length: sizing an INVITE before its branch is drawn.
_BRANCH_PLACEHOLDER = BRANCH_MAGIC + "0" * 20


class IdGenerator:
    """Branches, tags and Call-IDs from a cryptographic source (RFC 3261 §19.3)."""

    __slots__ = ("_random_bytes",)

    def __init__(self, random_bytes: RandomBytes = os.urandom) -> None:
        self._random_bytes = random_bytes

    def token(self, size: int) -> str:
        return self._random_bytes(size).hex()

    def branch(self) -> str:
        return BRANCH_MAGIC + self.token(10)

    def tag(self) -> str:
        return self.token(6)

    def call_id(self, host: str) -> str:
        return f"{self.token(16)}@{host}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvitePlan:
    """Everything the core needs to send (and resend) the initial INVITE of a leg."""

    call_id: str
    transport: Transport
    address: Address
    via_prefix: str
    request_uri: str
    from_header: str
    from_tag: str
    from_uri: str
    to_header: str
    contact: str
    head: tuple[tuple[str, str], ...]  # Max-Forwards, From, To, Call-ID (Via and CSeq apart)
    tail: tuple[tuple[str, str], ...]  # Contact, Allow, ..., Content-Type
    body: bytes
    srtp_key: str | None
    session_expires: int | None


def _field_error(field: str, problem: object) -> LocalProtocolError:
    return LocalProtocolError(f"DialRequest.{field}: {problem}")


def plan_invite(
    request: DialRequest,
    config: CoreConfig,
    ids: IdGenerator,
    *,
    transport_override: Transport | None = None,
) -> InvitePlan:
    """Validate a DialRequest and lay out its INVITE; LocalProtocolError names the bad field.

    An INVITE too large for UDP (RFC 3261 §18.1.1) is laid out again for TCP, unless the
    request or the configuration is `udp_only`."""
    target = request.target
    if not target.request_uri.strip():
        raise _field_error("target.request_uri", "empty request URI")
    if not target.signaling_addr.strip():
        raise _field_error("target.signaling_addr", "empty signaling address")
    try:
        uri = parse_uri(target.request_uri)
    except SipParseError as exc:
        raise _field_error("target.request_uri", exc) from None
    if isinstance(uri, SipUri):
        uri = uri.without_headers()
    try:
        transport = transport_override or resolve_transport(target)
    except SipParseError as exc:
        raise _field_error("target.request_uri", exc) from None
    try:
        address = parse_hostport(target.signaling_addr, transport.default_port)
    except SipParseError as exc:
        raise _field_error("target.signaling_addr", exc) from None
    if request.ring_timeout is not None and request.ring_timeout <= 0:
        raise _field_error("ring_timeout", f"{request.ring_timeout} is not positive")
    if request.max_duration is not None and request.max_duration <= 0:
        raise _field_error("max_duration", f"{request.max_duration} is not positive")
    session_expires = (
        request.session_expires if request.session_expires is not None else config.session_expires
    )
    if session_expires is not None and session_expires < config.min_se:
        raise _field_error(
            "session_expires", f"{session_expires} is below the Min-SE of {config.min_se}"
        )
    if request.call_id and any(c in request.call_id for c in " \t\r\n"):
        raise _field_error("call_id", f"{request.call_id!r} contains whitespace")

    if (transport is Transport.TLS and not config.listens_on(Transport.TLS)
            and not config.tls_connection_reuse):
        raise _field_error(
            "target", "no TLS listener to name in the Contact and Via (RFC 3261 §8.1.1.8): "
            "give the trunk a TLS certificate (a TLS listener) or dial it over TCP or UDP",
        )
    local_host, local_port = config.local_address(transport)
    request_uri = uri.render()
    call_id = request.call_id or ids.call_id(local_host)
    from_tag = ids.tag()
    secure = uri.is_secure
    caller_user = request.caller_user or target.caller_user or config.from_user
    display = request.caller_display_name or target.caller_display_name
    display = display or config.from_display_name
    from_uri_value = SipUri(
        host=config.from_host or local_host, user=caller_user, scheme="sips" if secure else "sip"
    )
    from_header = NameAddr(
        uri=from_uri_value, display_name=display, params=(("tag", from_tag),)
    ).render()
    to_header = NameAddr(uri=uri).render()
    contact_uri = SipUri(
        host=local_host,
        port=local_port,
        user=caller_user,
        scheme="sips" if transport is Transport.TLS else "sip",
        params=(("transport", "tcp"),) if transport is Transport.TCP else (),
    )
    head: list[tuple[str, str]] = [
        ("Max-Forwards", MAX_FORWARDS),
        ("From", from_header),
        ("To", to_header),
        ("Call-ID", call_id),
    ]
    contact = NameAddr(uri=contact_uri).render()
    tail: list[tuple[str, str]] = [
        ("Contact", contact),
        ("Allow", ALLOW),
        ("Supported", f"{SUPPORTED}, 100rel" if config.prack or config.require_100rel
         else SUPPORTED),
    ]
    if config.require_100rel:
        tail.append(("Require", "100rel"))
    if session_expires is not None:
        tail.append(("Session-Expires", str(session_expires)))
        tail.append(("Min-SE", str(config.min_se)))
    tail.append(("User-Agent", config.user_agent))
    tail.extend(_identity_headers(request))
    body, srtp_key = _offer(request, config, local_host)
    tail.append(("Content-Type", SDP_CONTENT_TYPE))
    for name, value in (*head, *tail):
        if "\r" in value or "\n" in value:
            raise _field_error(name, "value contains a line break")
    if transport is Transport.UDP:
        size = len(
            build_invite(
                tuple(head),
                tuple(tail),
                request_uri=request_uri,
                via=f"{transport.via_token} {format_hostport(local_host, local_port)}"
                + f";branch={_BRANCH_PLACEHOLDER};rport",
                cseq=1,
                auth_headers=(),
                body=body,
            )
        )
        chosen = transport_for_request(
            transport,
            size,
            udp_only=request.udp_only or config.udp_only
            or not config.listens_on(Transport.TCP),
            path_mtu=config.path_mtu,
        )
        if chosen is not transport:
            return plan_invite(request, config, ids, transport_override=chosen)
    return InvitePlan(
        call_id=call_id,
        transport=transport,
        address=address,
        via_prefix=f"{transport.via_token} {format_hostport(local_host, local_port)}",
        request_uri=request_uri,
        from_header=from_header,
        from_tag=from_tag,
        from_uri=from_uri_value.render(),
        to_header=to_header,
        contact=contact,
        head=tuple(head),
        tail=tuple(tail),
        body=body,
        srtp_key=srtp_key,
        session_expires=session_expires,
    )


def _identity_headers(request: DialRequest) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if request.asserted_identity_uri:
        try:
            asserted: SipUri | TelUri = parse_uri(request.asserted_identity_uri)
        except SipParseError as exc:
            raise _field_error("asserted_identity_uri", exc) from None
        headers.append(
            (
                "P-Asserted-Identity",
                NameAddr(
                    uri=asserted, display_name=request.asserted_identity_display_name
                ).render(),
            )
        )
    if request.privacy_tokens:
        headers.append(("Privacy", ";".join(request.privacy_tokens)))
    if request.history_info:
        try:
            headers.append(("History-Info", render_history_info(request.history_info)))
        except SipParseError as exc:
            raise _field_error("history_info", exc) from None
    if request.diversion:
        try:
            headers.append(("Diversion", render_diversion(request.diversion)))
        except SipParseError as exc:
            raise _field_error("diversion", exc) from None
    if request.identity_header:
        headers.append(("Identity", request.identity_header))
    return headers


def _offer(request: DialRequest, config: CoreConfig, local_host: str) -> tuple[bytes, str | None]:
    if request.sdp_body:
        return request.sdp_body.encode("utf-8"), None
    try:
        offer = build_offer(
            address=config.media_host or local_host,
            rtp_port=request.rtp_port or config.default_rtp_port,
            codecs=request.codecs or DEFAULT_CODECS,
            srtp=request.offer_srtp,
        )
    except LocalProtocolError as exc:
        raise _field_error("rtp_port/codecs (SDP offer)", exc) from None
    return offer.body, offer.srtp_key


def via_value(via_prefix: str, branch: str) -> str:
    """Our Via: `rport` (RFC 3581) always; over TCP and TLS also RFC 5923 `alias`, so the
    far end may send its requests back over our connection (one that opens its own goes to
    our Contact)."""
    alias = "" if via_prefix.startswith(_UDP_VIA) else ";alias"
    return f"{via_prefix};branch={branch};rport{alias}"


_UDP_VIA = Transport.UDP.via_token + " "


def build_invite(
    plan_head: tuple[tuple[str, str], ...],
    plan_tail: tuple[tuple[str, str], ...],
    *,
    request_uri: str,
    via: str,
    cseq: int,
    auth_headers: tuple[tuple[str, str], ...],
    body: bytes,
) -> bytes:
    headers = [("Via", via), *plan_head, ("CSeq", f"{cseq} INVITE"), *auth_headers, *plan_tail]
    return Request("INVITE", request_uri, headers, body).to_bytes()


def build_cancel(
    *,
    request_uri: str,
    invite_via: str,
    from_header: str,
    to_header: str,
    call_id: str,
    cseq: int,
    reason: str | None,
    user_agent: str,
) -> bytes:
    """CANCEL per §9.1: Request-URI, Call-ID, From, To, top Via and CSeq number of the INVITE."""
    headers = [
        ("Via", invite_via),
        ("Max-Forwards", MAX_FORWARDS),
        ("From", from_header),
        ("To", to_header),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} CANCEL"),
    ]
    if reason:
        headers.append(("Reason", reason))
    headers.append(("User-Agent", user_agent))
    return Request("CANCEL", request_uri, headers).to_bytes()


def build_failure_ack(
    *,
    request_uri: str,
    via: str,
    from_header: str,
    call_id: str,
    response: Response,
    routes: list[str] | None = None,
) -> bytes:
    """ACK for a non-2xx final response (§17.1.1.3): the request's URI, top Via, From, Call-ID
    and Route, To from the response."""
    cseq_number = response.cseq[0]
    headers = [("Via", via), ("Max-Forwards", MAX_FORWARDS)]
    headers.extend(("Route", route) for route in routes or ())
    headers += [
        ("From", from_header),
        ("To", response.header("to") or ""),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq_number} ACK"),
    ]
    return Request("ACK", request_uri, headers).to_bytes()
