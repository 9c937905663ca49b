"""Where an INVITE goes: host:port parsing, transport choice and Refer-To dial targets."""

from __future__ import annotations

from sipstack.dial import DialTarget
from sipstack.errors import SipParseError
from sipstack.headers.refer_to import ReferTo
from sipstack.transport import Address, Transport
from sipstack.uri import (
    SipUri,
    TelUri,
    format_hostport,
    parse_host,
    parse_port,
    parse_uri,
    shorten,
)


def parse_hostport(text: str, default_port: int) -> Address:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address into (host, port)."""
    what = f"address {shorten(text, 60)}"
    stripped = text.strip()
    if not stripped:
        raise SipParseError("address: empty host:port")
    if stripped[0] == "[":
        close = stripped.find("]")
        if close < 0:
            raise SipParseError(f"{what}: unclosed '['")
        host = parse_host(stripped[: close + 1], what)
        rest = stripped[close + 1 :]
        if not rest:
            return (host, default_port)
        if rest[0] != ":":
            raise SipParseError(f"{what}: unexpected text after ']'")
        return (host, parse_port(rest[1:], what))
    if stripped.count(":") > 1:
        return (parse_host(stripped, what), default_port)
    host_text, colon, port_text = stripped.partition(":")
    host = parse_host(host_text, what)
    return (host, parse_port(port_text, what) if colon else default_port)


def uri_transport(uri: SipUri) -> Transport | None:
    """The transport a SIP URI demands: `;transport=`, then TLS for sips:; None if it is silent.

    A sips: URI with `;transport=tcp` means TLS over TCP (RFC 5630 §3.1.3); sips over UDP
    cannot be secured, so it is an error rather than a silent downgrade.
    """
    param = uri.param("transport")
    transport: Transport | None = None
    if param is not None:
        try:
            transport = Transport(param.lower())
        except ValueError:
            raise SipParseError(
                f"URI {shorten(uri.render(), 60)}: unsupported transport {shorten(param, 20)}"
                " (expected udp, tcp or tls)"
            ) from None
    elif uri.has_param("transport"):
        raise SipParseError(f"URI {shorten(uri.render(), 60)}: transport parameter has no value")
    if uri.is_secure:
        if transport is Transport.UDP:
            raise SipParseError(
                f"URI {shorten(uri.render(), 60)}: a sips: URI cannot use transport=udp"
            )
        return Transport.TLS
    return transport


def resolve_transport(target: DialTarget) -> Transport:
    """`;transport=` URI parameter > sips: scheme (TLS) > target.transport > UDP."""
    if not target.request_uri.strip():
        raise SipParseError("request URI: empty")
    uri = parse_uri(target.request_uri)
    demanded = uri_transport(uri) if isinstance(uri, SipUri) else None
    if demanded is not None:
        return demanded
    return target.transport if target.transport is not None else Transport.UDP


def dial_target_from_refer_to(text: str) -> DialTarget:
    """A DialTarget from a Refer-To value: a sip:/sips: URI, bare or in <> (display name allowed).

    The signaling address is the URI's maddr or host, with the URI's port or the default for
    its transport (5061 for TLS, else 5060). Embedded ?headers (Replaces, ...) are not part of a
    Request-URI and are dropped; URI parameters stay on the request URI.
    """
    if not text.strip():
        raise SipParseError("Refer-To: empty value")
    uri: SipUri | TelUri
    try:
        uri = ReferTo.parse(text).uri if "<" in text else parse_uri(text)
    except SipParseError as exc:
        message = str(exc)
        raise SipParseError(
            message if message.startswith("Refer-To") else f"Refer-To: {message}"
        ) from None
    if not isinstance(uri, SipUri):
        raise SipParseError(f"Refer-To: non-SIP scheme {uri.scheme!r} (expected sip or sips)")
    if not uri.user:
        raise SipParseError(f"Refer-To: URI {shorten(uri.render(), 60)} has no user part")
    try:
        transport = uri_transport(uri)
    except SipParseError as exc:
        raise SipParseError(f"Refer-To: {exc}") from None
    host = uri.host
    maddr = uri.param("maddr")
    if maddr:
        host = parse_host(maddr, "Refer-To maddr")
    port = uri.port
    if port is None:
        port = Transport.TLS.default_port if transport is Transport.TLS else 5060
    return DialTarget(
        request_uri=uri.without_headers().render(),
        signaling_addr=format_hostport(host, port),
        transport=transport,
    )
