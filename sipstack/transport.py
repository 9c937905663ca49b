"""SIP transports (RFC 3261 §18) and the address type used across the stack."""

from __future__ import annotations

from enum import StrEnum

Address = tuple[str, int]
"""A (host, port) pair; host is an IP literal or a name, IPv6 without brackets."""


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_connection_oriented(self) -> bool:
        return self is not Transport.UDP

    @property
    def is_tls(self) -> bool:
        return self is Transport.TLS

    @property
    def via_token(self) -> str:
        return "SIP/2.0/" + self.value.upper()

    @property
    def default_port(self) -> int:
        return 5061 if self is Transport.TLS else 5060

    @classmethod
    def parse(cls, text: str) -> Transport:
        """Accept 'udp', 'UDP', 'SIP/2.0/TLS'; raise ValueError naming the bad value."""
        token = text.strip().rsplit("/", 1)[-1].lower()
        try:
            return cls(token)
        except ValueError:
            raise ValueError(f"unknown SIP transport {text!r} (expected udp, tcp or tls)") from None


# RFC 3261 §18.1.1: without a known path MTU, a request over 1300 bytes needs congestion
# control; with one, a request within 200 bytes of it does.
UDP_MAX_REQUEST = 1300
_MTU_MARGIN = 200


def transport_for_request(
    transport: Transport, size: int, *, udp_only: bool = False, path_mtu: int | None = None
) -> Transport:
    """The transport a request of `size` bytes planned for `transport` must go over: TCP
    instead of UDP when it is too large for a datagram (§18.1.1), unless `udp_only` (a trunk
    that takes nothing else). TCP and TLS stay as they are."""
    if transport is not Transport.UDP or udp_only:
        return transport
    limit = UDP_MAX_REQUEST if path_mtu is None else path_mtu - _MTU_MARGIN
    return Transport.TCP if size > limit else Transport.UDP
