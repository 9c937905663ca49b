"""Configuration objects of the UAC core: RFC 3261 timer values, local addresses and limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sipstack.transport import Address, Transport

# RFC 3261 §17.1.1.2: Timer D is "at least 32 seconds" over unreliable transports.
_TIMER_D_UNRELIABLE = 32.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerConfig:
    """RFC 3261 T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if self.t1 <= 0 or self.t2 <= 0 or self.t4 < 0:
            raise ValueError(
                f"timer values must be positive: t1={self.t1} t2={self.t2} t4={self.t4}"
            )
        if self.t2 < self.t1:
            raise ValueError(f"t2 ({self.t2}) must not be smaller than t1 ({self.t1})")

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout (also Timer F for non-INVITE and Timer M)."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        return 0.0 if reliable else max(_TIMER_D_UNRELIABLE, 64 * self.t1)

    def timer_k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4


def _default_local_addresses() -> dict[Transport, Address]:
    return {Transport.UDP: ("127.0.0.1", 5060)}


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    """Everything the UAC core needs to know about itself.

    `local_addresses` gives the Via sent-by / Contact host:port per transport: the transports
    we listen on. A TCP without an entry uses the host of the first entry and port 5060; TLS
    without one is refused unless `tls_connection_reuse` (sipstack.uac_build), and a request
    too big for UDP moves to TCP only when TCP has an entry.
    """

    local_addresses: Mapping[Transport, Address] = field(default_factory=_default_local_addresses)
    media_host: str = ""  # SDP c= address; empty: the host of the local address in use
    from_user: str = "outbound"
    from_display_name: str = ""
    from_host: str = ""  # host of our From URI; empty: the local signaling host
    user_agent: str = "outbound/0.1"
    default_rtp_port: int = 10000
    session_expires: int | None = None  # RFC 4028 interval offered in INVITEs; None: no offer
    min_se: int = 90  # RFC 4028 Min-SE we send (and the floor we accept)
    max_ring_time: float = 300.0  # CANCEL an INVITE still ringing after this (no ring_timeout)
    prack: bool = False  # RFC 3262: offer 100rel (Supported) and PRACK reliable 1xx
    require_100rel: bool = False  # also Require: 100rel in every INVITE (implies prack)
    # A 421 whose Require names 100rel, to an INVITE that did not require it, is answered by
    # one new INVITE with Supported and Require: 100rel (RFC 3262 §4); False: the leg fails.
    retry_421: bool = True
    max_redirects: int = 3  # 3xx Contacts followed per leg (RFC 3261 §8.1.3.4); 0: none
    max_legs: int = 100_000  # dial() refuses new legs beyond this
    udp_only: bool = False  # the trunk takes UDP only: a request over 1300 bytes stays on UDP
    # No TLS listener, yet TLS dials allowed: the far end reuses our connection (RFC 5923
    # ;alias) and our TLS Via/Contact name host:5061 as an alias only (sipstack.uac_build).
    tls_connection_reuse: bool = False
    path_mtu: int | None = None  # known path MTU (RFC 3261 §18.1.1); None: unknown, 1300 applies
    # The cap of every table the core keeps about things other than live legs (detached
    # INVITEs, INVITEs we sent, ACKs and responses kept for retransmissions): a flood of
    # stray traffic evicts the oldest entries (or is dropped) instead of growing memory.
    max_remembered: int = 10_000
    timers: TimerConfig = field(default_factory=TimerConfig)

    def __post_init__(self) -> None:
        if not self.local_addresses:
            raise ValueError("local_addresses must name at least one transport's address")
        if self.session_expires is not None and self.session_expires < self.min_se:
            raise ValueError(
                f"session_expires ({self.session_expires}) is below min_se ({self.min_se})"
            )
        if self.min_se < 90:
            raise ValueError(f"min_se ({self.min_se}) is below the RFC 4028 floor of 90 s")
        if self.max_remembered < 1:
            raise ValueError("max_remembered must be >= 1")
        if self.max_ring_time <= 0:
            raise ValueError("max_ring_time must be > 0")

    def listens_on(self, transport: Transport) -> bool:
        """Whether `transport` has a local address of its own (a listener to advertise)."""
        return transport in self.local_addresses

    def local_address(self, transport: Transport) -> Address:
        address = self.local_addresses.get(transport)
        if address is not None:
            return address
        host = next(iter(self.local_addresses.values()))[0]
        return (host, transport.default_port)
