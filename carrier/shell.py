"""The carrier simulator's asyncio shell: UDP and TCP sockets around CarrierCore, one timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable

from carrier.config import CarrierConfig
from carrier.core import Authenticator, CarrierCore
from carrier.state import CarrierStats
from sipstack.errors import SipParseError
from sipstack.framing import StreamFramer
from sipstack.transport import Address, Transport

log = logging.getLogger("outbound.carrier")

Clock = Callable[[], float]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: CarrierServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        self._server.deliver(data, source, Transport.UDP)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a caller that went away: nothing to do but note it.
        log.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, server: CarrierServer) -> None:
        self._server = server
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self._peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1]))
        self._server.tcp_connected(self._peer, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._framer.feed(data)
        except SipParseError as exc:
            log.info("closing TCP connection from %s:%d: %s", *self._peer, exc)
            self._server.core.stats.parse_errors += 1
            if self._transport is not None:
                self._transport.close()
            return
        for message in messages:
            self._server.deliver(message, self._peer, Transport.TCP)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.tcp_disconnected(self._peer)


class CarrierServer:
    """Runs a CarrierCore on UDP and/or TCP sockets bound to one host and port."""

    def __init__(
        self,
        core: CarrierCore,
        host: str,
        port: int,
        *,
        transports: Iterable[Transport] = (Transport.UDP, Transport.TCP),
        clock: Clock = time.time,
    ) -> None:
        self.core = core
        self.host = host
        self.port = port  # the bound port once started
        self._requested_port = port
        self.transports = frozenset(transports)
        if not self.transports or Transport.TLS in self.transports:
            raise ValueError("the carrier listens on UDP and/or TCP")
        self._clock = clock
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._connections: dict[Address, asyncio.Transport] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped_sends = 0

    async def start(self) -> None:
        """Bind the sockets; with port 0 one free port serves both UDP and TCP."""
        self._loop = asyncio.get_running_loop()
        for _attempt in range(20):
            try:
                await self._bind()
                return
            except OSError:
                await self._close_sockets()
                if self._requested_port != 0:
                    raise
        raise OSError(f"no port on {self.host} was free for both UDP and TCP after 20 tries")

    async def _bind(self) -> None:
        assert self._loop is not None
        port = self._requested_port
        if Transport.UDP in self.transports:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, port)
            )
            self._udp = transport
            _enlarge_buffers(transport.get_extra_info("socket"))
            port = int(transport.get_extra_info("sockname")[1])
        if Transport.TCP in self.transports:
            self._tcp_server = await self._loop.create_server(
                lambda: _TcpProtocol(self), self.host, port, reuse_address=True
            )
            port = int(self._tcp_server.sockets[0].getsockname()[1])
        self.port = port

    async def _close_sockets(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for connection in list(self._connections.values()):
            connection.close()
        await self._close_sockets()

    # ---- called by the protocols --------------------------------------------------------------

    def deliver(self, data: bytes, source: Address, transport: Transport) -> None:
        try:
            self.core.receive(data, source, transport, self._clock())
        except Exception:  # a bug in the core must not take the listener down with it
            log.exception("carrier core failed on a message from %s:%d", *source)
        self._flush()

    def tcp_connected(self, peer: Address, transport: asyncio.Transport) -> None:
        self._connections[peer] = transport

    def tcp_disconnected(self, peer: Address) -> None:
        self._connections.pop(peer, None)
        self.core.connection_lost(Transport.TCP, peer)
        self._flush()

    # ---- sending and the timer ---------------------------------------------------------------

    def _flush(self) -> None:
        for data, transport, address in self.core.outgoing():
            if transport is Transport.UDP and self._udp is not None:
                self._udp.sendto(data, address)
            else:
                connection = self._connections.get(address)
                if connection is None or connection.is_closing():
                    self.dropped_sends += 1
                else:
                    connection.write(data)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None or deadline >= self._timer_deadline or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = float("inf")
        try:
            self.core.handle_timer(self._clock())
        except Exception:
            log.exception("carrier core failed in a timer")
        self._flush()


UDP_BUFFER_BYTES = 4 * 1024 * 1024


def _enlarge_buffers(sock: socket.socket | None) -> None:
    """Room for bursts: at 1,000 calls/s the default ~200 kB receive buffer overflows whenever
    the loop is descheduled for a moment, and every lost ACK or BYE is a false failure."""
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)


def advertised_host(listen_host: str) -> str:
    """The host for Contact/Via: the listen host, or this machine's address for a wildcard."""
    if listen_host not in ("0.0.0.0", "::", ""):
        return listen_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def format_summary(stats: CarrierStats, elapsed: float, *, title: str | None = None) -> str:
    """The calls-by-outcome table printed when the simulator stops."""
    outcomes = stats.outcomes()
    width = max(len(k) for k in outcomes)
    lines = [title or f"carrier summary after {elapsed:.1f} s"]
    lines.extend(f"  {key:<{width}}  {value:>9}" for key, value in outcomes.items())
    lines.append(
        f"  {'messages in/out':<{width}}  {stats.messages_received:>9}/{stats.messages_sent}"
        f"  retransmissions sent {stats.retransmissions}, parse errors {stats.parse_errors}"
    )
    return "\n".join(lines)


async def run_carrier(
    config: CarrierConfig,
    host: str,
    port: int,
    *,
    transports: Iterable[Transport] = (Transport.UDP, Transport.TCP),
    advertise: str | None = None,
    authenticator: Authenticator | None = None,
    seed: int | None = None,
    on_ready: Callable[[CarrierServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> CarrierStats:
    """Serve until `stop` is set or SIGINT/SIGTERM arrives; return the final counters.

    `advertise` is the host put in Via and Contact (default: the listen host, or this machine's
    address when listening on a wildcard).
    """
    core = CarrierCore(config, rng=random.Random(seed), authenticator=authenticator)
    server = CarrierServer(core, host, port, transports=transports)
    await server.start()
    core.set_local_address((advertise or advertised_host(host), server.port))
    stop_event = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop_event.set)
            installed.append(signum)
    if on_ready is not None:
        on_ready(server)
    try:
        await stop_event.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await server.stop()
    return core.stats


class BackgroundCarrier:
    """A carrier simulator on its own event-loop thread, for the demo and for tests."""

    def __init__(
        self,
        config: CarrierConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        transports: Iterable[Transport] = (Transport.UDP, Transport.TCP),
        authenticator: Authenticator | None = None,
        seed: int | None = None,
    ) -> None:
        self.core = CarrierCore(config, rng=random.Random(seed), authenticator=authenticator)
        self._server = CarrierServer(self.core, host, port, transports=transports)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="carrier",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def stats(self) -> CarrierStats:
        return self.core.stats

    def start(self, timeout: float = 10.0) -> BackgroundCarrier:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(timeout)
        self.core.set_local_address((self._server.host, self._server.port))
        return self

    def stop(self, timeout: float = 10.0) -> CarrierStats:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._loop.close()
        return self.core.stats
