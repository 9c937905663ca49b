"""Dialog state (RFC 3261 §12): tags, CSeqs, remote target and route set; in-dialog requests."""

from __future__ import annotations

from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.headers.name_addr import NameAddr
from sipstack.headers.split import split_header_values
from sipstack.message import Request, Response
from sipstack.target import uri_transport
from sipstack.transport import Address, Transport
from sipstack.uri import SipUri, parse_uri

MAX_FORWARDS = "70"


@dataclass(frozen=True, slots=True, kw_only=True)
class NextHop:
    """Where an in-dialog request goes: the first Route, else the remote target (§12.2.1.1)."""

    address: Address
    transport: Transport


class Dialog:
    """One confirmed dialog of a leg, as the UAC sees it."""

    __slots__ = (
        "call_id",
        "local_cseq",
        "local_header",
        "next_hop",
        "remote_cseq",
        "remote_header",
        "remote_target",
        "route_set",
        "strict_route",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_header: str,
        remote_header: str,
        local_cseq: int,
        remote_target: str,
        route_set: tuple[str, ...],
        next_hop: NextHop,
        remote_cseq: int | None = None,
    ) -> None:
        self.call_id = call_id
        self.local_header = local_header  # our From value, tag included
        self.remote_header = remote_header  # the peer's To value, tag included
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.remote_target = remote_target
        self.route_set = route_set  # Route values in the order we send them
        self.strict_route = bool(route_set) and not _is_loose(route_set[0])
        self.next_hop = next_hop

    @classmethod
    def from_answer(
        cls,
        response: Response,
        *,
        call_id: str,
        local_header: str,
        remote_header_without_tag: str,
        invite_cseq: int,
        fallback_target: str,
        fallback_hop: NextHop,
    ) -> Dialog:
        """The dialog a 2xx to our INVITE creates (§12.1.2): Record-Route reversed, Contact."""
        route_set = tuple(reversed(_route_values(response)))
        remote_target = fallback_target
        contact = response.header("contact")
        if contact is not None:
            try:
                remote_target = _uri_of(split_header_values(contact)[0])
            except (SipParseError, IndexError):
                remote_target = fallback_target
        to_value = response.header("to") or remote_header_without_tag
        dialog = cls(
            call_id=call_id,
            local_header=local_header,
            remote_header=to_value,
            local_cseq=invite_cseq,
            remote_target=remote_target,
            route_set=route_set,
            next_hop=fallback_hop,
        )
        dialog.next_hop = dialog.resolve_next_hop(fallback_hop)
        return dialog

    def resolve_next_hop(self, fallback: NextHop) -> NextHop:
        """Address and transport of the first Route (or remote target); fallback if unusable."""
        uri_text = _uri_of(self.route_set[0]) if self.route_set else self.remote_target
        try:
            uri = parse_uri(uri_text)
        except SipParseError:
            return fallback
        if not isinstance(uri, SipUri):
            return fallback
        try:
            transport = uri_transport(uri) or fallback.transport
        except SipParseError:
            transport = fallback.transport
        maddr = uri.param("maddr")
        host = maddr if maddr else uri.host
        port = uri.port if uri.port is not None else transport.default_port
        return NextHop(address=(host, port), transport=transport)

    def update_remote_target(self, contact_value: str, fallback: NextHop) -> None:
        """A target refresh request (re-INVITE, UPDATE) replaces the remote target (§12.2.2)."""
        try:
            self.remote_target = _uri_of(split_header_values(contact_value)[0])
        except (SipParseError, IndexError):
            return
        self.next_hop = self.resolve_next_hop(fallback)

    def request_uri_and_routes(self) -> tuple[str, tuple[str, ...]]:
        """Request-URI and Route values, loose or strict routing (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, ()
        if not self.strict_route:
            return self.remote_target, self.route_set
        first_uri = _uri_of(self.route_set[0])
        return first_uri, (*self.route_set[1:], f"<{self.remote_target}>")

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    def build_request(
        self,
        method: str,
        *,
        via: str,
        cseq: int,
        extra_headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Request:
        """A request inside this dialog; `cseq` is the number (ACK reuses the INVITE's)."""
        uri, routes = self.request_uri_and_routes()
        headers: list[tuple[str, str]] = [
            ("Via", via),
            ("Max-Forwards", MAX_FORWARDS),
        ]
        headers.extend(("Route", route) for route in routes)
        headers.append(("From", self.local_header))
        headers.append(("To", self.remote_header))
        headers.append(("Call-ID", self.call_id))
        headers.append(("CSeq", f"{cseq} {method}"))
        if extra_headers:
            headers.extend(extra_headers)
        return Request(method, uri, headers, body)

    def accepts_remote_cseq(self, cseq: int) -> bool:
        """Record a request's CSeq; False when it is lower than the last one (§12.2.2 → 500)."""
        if self.remote_cseq is not None and cseq < self.remote_cseq:
            return False
        self.remote_cseq = cseq
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogSnapshot:
    """What another process needs to end a leg this one owned (stored beside the leg row).

    `state` is the leg state name: "calling"/"ringing" legs are CANCELled, "answered" and
    "established" ones get a BYE. `invite_via` is the INVITE's exact top Via, which a CANCEL
    must repeat (§9.1).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_cseq: int
    remote_target: str
    route_set: tuple[str, ...]
    transport: Transport
    peer_address: Address
    from_header: str
    to_header: str
    invite_branch: str
    invite_via: str
    invite_cseq: int
    request_uri: str
    state: str
    correlation_id: str = ""
    scenario: str = ""
    trunk: str = ""
    started_at: float | None = None
    answered_at: float | None = None


def _route_values(response: Response) -> list[str]:
    """Record-Route entries we can route through; an unreadable entry is left out, since
    a route set we cannot parse is no better than none (the request still reaches the peer
    through its Contact)."""
    usable: list[str] = []
    for value in response.headers_all("record-route"):  # comma-joined values come back split
        try:
            NameAddr.parse(value)
        except SipParseError:
            continue
        usable.append(value)
    return usable


def _uri_of(name_addr: str) -> str:
    """The URI of a name-addr / addr-spec value, rendered without ?headers."""
    uri = NameAddr.parse(name_addr).uri
    if isinstance(uri, SipUri):
        uri = uri.without_headers()
    return uri.render()


def _is_loose(route: str) -> bool:
    try:
        uri = NameAddr.parse(route).uri
    except SipParseError:
        return True
    return isinstance(uri, SipUri) and uri.has_param("lr")
