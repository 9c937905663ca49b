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
