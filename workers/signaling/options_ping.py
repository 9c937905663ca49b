"""SIP OPTIONS pings to trunks over the worker's own transports: one round, a result per trunk
(status, reason, RTT, retransmissions), Timer E retransmissions on UDP (RFC 3261 §17.1.2.1).

Used by `outbound trunks check` and by the OPTIONS health checks of a running worker
(workers.coordination.health.HealthPinger).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
import time
from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.message import Request, Response, parse_message
from sipstack.transport import Address, Transport
from sipstack.uri import format_hostport
from workers.config.trunks import TrunkConfig
from workers.signaling.transports import Transports

T1, T2 = 0.5, 4.0

@dataclass(frozen=True, slots=True)
class PingResult:
    trunk: str
    proxy: str
    transport: str
    status: int | None
    reason: str
    rtt_ms: float | None
    sent: int  # OPTIONS sent, retransmissions included
    error: str | None

    @property
    def reachable(self) -> bool:
        return self.status is not None


class _Probe:
    def __init__(self, trunk: TrunkConfig, address: Address, branch: str) -> None:
        self.trunk = trunk
        self.address = address
        self.branch = branch
        self.data = b""
        self.first_sent = 0.0
        self.sent = 0
        self.interval = T1
        self.done: asyncio.Future[PingResult] = asyncio.get_running_loop().create_future()

    def finish(self, status: int | None, reason: str, error: str | None) -> None:
        if self.done.done():
            return
        rtt = (time.monotonic() - self.first_sent) * 1000 if status is not None else None
        self.done.set_result(PingResult(
            trunk=self.trunk.name, proxy=self.trunk.proxy, transport=self.trunk.transport.value,
            status=status, reason=reason, rtt_ms=rtt, sent=self.sent, error=error,
        ))


class OptionsPinger:
    """Pings trunks over the worker's own transports (same TLS checks, same name resolution)."""

    def __init__(self, *, bind_host: str = "0.0.0.0", timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._bind_host = bind_host
        self._probes: dict[str, _Probe] = {}
        self._transports: dict[str, Transports] = {}

    async def ping(self, trunks: list[TrunkConfig]) -> list[PingResult]:
        try:
            for trunk in trunks:  # each trunk with its own TLS CA and client certificate
                config = dataclasses.replace(
                    trunk.transport_config(self._bind_host, 0), connect_timeout=self.timeout,
                    tls_server_cert_file=None, tls_server_key_file=None,
                )
                transports = Transports(config, self._on_receive, self._on_lost)
                self._transports[trunk.name] = transports
                await transports.start()
            probes = [self._start(trunk) for trunk in trunks]
            return list(await asyncio.gather(*(self._wait(p) for p in probes)))
        finally:
            for transports in self._transports.values():
                await transports.close()
            self._transports.clear()

    def _start(self, trunk: TrunkConfig) -> _Probe:
        address = trunk.proxy_address
        probe = _Probe(trunk, address, f"z9hG4bK{secrets.token_hex(8)}")
        probe.data = self._options(trunk, address, probe.branch).to_bytes()
        self._probes[probe.branch] = probe
        probe.first_sent = time.monotonic()
        self._send(probe)
        return probe

    def _options(self, trunk: TrunkConfig, address: Address, branch: str) -> Request:
        local_host, local_port = self._transports[trunk.name].local_address()
        if local_host in ("0.0.0.0", "::"):
            local_host = _route_source(address)
        scheme = "sips" if trunk.transport.is_tls else "sip"
        target = f"{scheme}:{format_hostport(*address)}"
        if trunk.transport is Transport.TCP:
            target += ";transport=tcp"
        local = format_hostport(local_host, local_port)
        return Request("OPTIONS", target, [
            ("Via", f"{trunk.transport.via_token} {local};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{scheme}:outbound@{local}>;tag={secrets.token_hex(6)}"),
            ("To", f"<{target}>"),
            ("Call-ID", f"{secrets.token_hex(12)}@{local_host}"),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
            ("User-Agent", "outbound trunks check"),
        ])

    def _send(self, probe: _Probe) -> None:
        probe.sent += 1
        self._transports[probe.trunk.name].send(probe.data, probe.trunk.transport, probe.address)

    async def _wait(self, probe: _Probe) -> PingResult:
        deadline = probe.first_sent + self.timeout
        while not probe.done.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                probe.finish(None, "", f"no response in {self.timeout:g} s")
                break
            wait = min(remaining, probe.interval) if probe.trunk.transport is Transport.UDP \
                else remaining
            try:
                await asyncio.wait_for(asyncio.shield(probe.done), wait)
            except TimeoutError:
                if probe.trunk.transport is Transport.UDP and time.monotonic() < deadline:
                    self._send(probe)  # Timer E: T1 doubling up to T2
                    probe.interval = min(probe.interval * 2, T2)
        self._probes.pop(probe.branch, None)
        return probe.done.result()

    def _on_receive(self, data: bytes, source: Address, transport: Transport) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if not isinstance(message, Response) or message.status_code < 200:
            return
        probe = self._probes.get(message.via_branch or "")
        if probe is not None:
            probe.finish(message.status_code, message.reason, None)

    def _on_lost(self, transport: Transport, address: Address) -> None:
        for probe in list(self._probes.values()):
            if probe.trunk.transport is transport and probe.address == address:
                probe.finish(None, "", "connection failed" if transport.is_connection_oriented
                             else "cannot resolve host")


def _route_source(address: Address) -> str:
    """The local address the kernel would send to `address` from (a wildcard-bound socket
    has none of its own to put in Via and From)."""
    if address[0].startswith("127."):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET,
                           socket.SOCK_DGRAM) as probe:
            probe.connect(address)  # UDP: no packet is sent, only the route is chosen
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
