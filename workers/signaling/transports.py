"""SIP transports on asyncio: one shared UDP socket and a TCP/TLS connection pool per peer."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.framing import DEFAULT_MAX_MESSAGE, StreamFramer, StreamFramingError
from sipstack.transport import Address, Transport

ReceiveCallback = Callable[[bytes, Address, Transport], None]
"""(message bytes, source, transport); for TCP/TLS the source is the pooled peer's address."""
LostCallback = Callable[[Transport, Address], None]
"""(transport, address) of a connection that failed to open or was lost while in use."""
BatchEndCallback = Callable[[], None]
"""Called after each burst of deliveries (one socket wake-up), so the owner can act once."""

# Datagrams read per wake-up before yielding to the loop: batching amortises the loop's cost
# at high call rates without starving the other sockets.
_UDP_BATCH = 256
_UDP_MAX_DATAGRAM = 65_535

_PONG = b"\r\n"
_UDP_KEEPALIVES = frozenset({b"", b"\r\n", b"\r\n\r\n"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """Where to bind and how to treat pooled connections.

    `tls_ca_file` None trusts the system store. TLS always verifies the server's certificate
    against the host part of the address sent to: a name is checked as a name (never its IP).
    """

    bind_host: str = "127.0.0.1"
    udp_port: int = 0  # 0: any free port
    connect_timeout: float = 5.0
    idle_timeout: float = 120.0  # close a connection no leg uses after this long without traffic
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None  # client certificate (mutual TLS), optional
    tls_key_file: str | None = None
    max_message: int = DEFAULT_MAX_MESSAGE
    udp_receive_buffer: int = 4 * 1024 * 1024


@dataclass(slots=True)
class TransportStats:
    """Counters of the I/O layer; bad input is counted here, never raised."""

    udp_datagrams_in: int = 0
    udp_datagrams_out: int = 0
    udp_keepalives_in: int = 0
    udp_send_errors: int = 0
    stream_messages_in: int = 0
    stream_messages_out: int = 0
    stream_framing_errors: int = 0
    stream_pings_answered: int = 0
    connections_opened: int = 0
    connect_failures: int = 0
    connections_lost: int = 0
    connections_closed_idle: int = 0
    idle_sweeps: int = 0
    callback_errors: int = 0
    resolve_failures: int = 0


class Transports:
    """Send SIP bytes by (transport, address) and deliver what arrives to one callback.

    `send` never blocks and never raises for network trouble: stream connections open in the
    background, their queued bytes go out once connected, and a failure to connect or a loss
    of a connection is reported through `on_connection_lost(transport, address)`.
    """

    def __init__(
        self,
        config: TransportConfig,
        on_receive: ReceiveCallback,
        on_connection_lost: LostCallback,
        *,
        on_batch_end: BatchEndCallback | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.stats = TransportStats()
        self._on_receive = on_receive
        self._on_connection_lost = on_connection_lost
        self._on_batch_end = on_batch_end
        self._log = logger or logging.getLogger(__name__)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: socket.socket | None = None
        self._udp_backlog: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._udp_address: Address | None = None
        self._connections: dict[tuple[Transport, Address], _StreamConnection] = {}
        self._users: dict[tuple[Transport, Address], int] = {}
        self._resolved: dict[str, str] = {}
        self._resolving: dict[str, list[tuple[bytes, int]]] = {}
        self._tls_context: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP socket (the address is `local_address(Transport.UDP)`)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        family = socket.AF_INET6 if ":" in self.config.bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.udp_receive_buffer)
            sock.bind((self.config.bind_host, self.config.udp_port))
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"cannot bind UDP {self.config.bind_host}:{self.config.udp_port}: {exc}"
            ) from exc
        sock.setblocking(False)
        self._udp = sock
        loop.add_reader(sock.fileno(), self._read_udp)
        bound = sock.getsockname()
        self._udp_address = (bound[0], bound[1])
        self._schedule_sweep()

    def local_address(self, transport: Transport = Transport.UDP) -> Address:
        """The bound UDP address; TCP/TLS advertise the same host and port (no listener)."""
        if self._udp_address is None:
            raise RuntimeError("Transports.start() has not been awaited")
        return self._udp_address

    async def close(self) -> None:
        """Close the UDP socket and every pooled connection; nothing is reported as lost."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            connection.close_quietly()
        if self._udp is not None and self._loop is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._loop.remove_writer(self._udp.fileno())
            self._udp.close()
            self._udp = None
        waits = [c.closed for c in connections]
        if waits:
            await asyncio.wait(waits, timeout=2.0)

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, transport: Transport, address: Address) -> None:
        """Send one message; UDP at once, TCP/TLS over the pooled connection to `address`."""
        if self._closed:
            raise RuntimeError("Transports is closed")
        if transport is Transport.UDP:
            self._send_udp(data, address)
            return
        key = (transport, address)
        connection = self._connections.get(key)
        if connection is None:
            connection = self._open(key)
        connection.write(data)
        self.stats.stream_messages_out += 1

    def acquire(self, transport: Transport, address: Address) -> None:
        """Mark the connection to `address` as used by one more leg (never idle-closed)."""
        if transport.is_connection_oriented:
            key = (transport, address)
            self._users[key] = self._users.get(key, 0) + 1

    def release(self, transport: Transport, address: Address) -> None:
        """One leg no longer uses the connection; it may be closed once idle."""
        key = (transport, address)
        count = self._users.get(key, 0) - 1
        if count > 0:
            self._users[key] = count
        else:
            self._users.pop(key, None)

    def connection_count(self) -> int:
        return len(self._connections)

    def has_connection(self, transport: Transport, address: Address) -> bool:
        return (transport, address) in self._connections

    def _send_udp(self, data: bytes, address: Address) -> None:
        udp = self._udp
        if udp is None:
            raise RuntimeError("Transports.start() has not been awaited")
        host, port = address
        ip = self._resolved.get(host)
        if ip is None:
            if not _is_ip_literal(host):
                self._resolve_then_send(host, data, port)
                return
            ip = self._resolved[host] = host
        if self._udp_backlog:
            self._udp_backlog.append((data, (ip, port)))
            return
        try:
            udp.sendto(data, (ip, port))
            self.stats.udp_datagrams_out += 1
        except BlockingIOError:
            self._udp_backlog.append((data, (ip, port)))
            assert self._loop is not None
            self._loop.add_writer(udp.fileno(), self._flush_udp)
        except (OSError, ValueError) as exc:
            self.stats.udp_send_errors += 1
            self._log.warning("UDP send to %s:%s failed: %s", host, port, exc)

    def _flush_udp(self) -> None:
        udp = self._udp
        backlog = self._udp_backlog
        while udp is not None and backlog:
            data, destination = backlog[0]
            try:
                udp.sendto(data, destination)
            except BlockingIOError:
                return
            except OSError as exc:
                self.stats.udp_send_errors += 1
                self._log.warning("UDP send to %s:%s failed: %s", *destination, exc)
            else:
                self.stats.udp_datagrams_out += 1
            backlog.popleft()
        if udp is not None and self._loop is not None:
            self._loop.remove_writer(udp.fileno())

    def drain_udp(self, limit: int = 100_000) -> None:
        """Deliver every datagram already queued on the socket (up to `limit`) right now.

        The owner calls this before running its timers: when the loop falls behind, a response
        that has already arrived must be seen before a timer retransmits the request.
        """
        self._read_udp(limit)

    def _read_udp(self, limit: int = _UDP_BATCH) -> None:
        udp = self._udp
        if udp is None:
            return
        stats = self.stats
        delivered = False
        for _ in range(limit):
            try:
                data, source = udp.recvfrom(_UDP_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                stats.udp_send_errors += 1
                self._log.debug("UDP receive error: %s", exc)
                continue
            stats.udp_datagrams_in += 1
            if data in _UDP_KEEPALIVES:
                stats.udp_keepalives_in += 1
                continue
            delivered = True
            self._deliver(data, (source[0], source[1]), Transport.UDP)
        if delivered:
            self._end_batch()

    def _end_batch(self) -> None:
        if self._on_batch_end is None:
            return
        try:
            self._on_batch_end()
        except Exception:
            self.stats.callback_errors += 1
            self._log.exception("batch-end callback failed")

    def _resolve_then_send(self, host: str, data: bytes, port: int) -> None:
        waiting = self._resolving.get(host)
        if waiting is not None:
            waiting.append((data, port))
            return
        self._resolving[host] = [(data, port)]
        assert self._loop is not None
        self._loop.create_task(self._resolve(host))

    async def _resolve(self, host: str) -> None:
        assert self._loop is not None
        family = socket.AF_INET6 if ":" in self.config.bind_host else socket.AF_INET
        try:
            infos = await self._loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
            ip = str(infos[0][4][0])
        except (OSError, IndexError) as exc:
            dropped = self._resolving.pop(host, [])
            self.stats.resolve_failures += 1
            self._log.warning(
                "cannot resolve %r (dropped %d datagrams): %s", host, len(dropped), exc
            )
            for _, port in dropped:
                self._report_lost(Transport.UDP, (host, port))
            return
        self._resolved[host] = ip
        for data, port in self._resolving.pop(host, []):
            if not self._closed:
                self._send_udp(data, (host, port))

    def _open(self, key: tuple[Transport, Address]) -> _StreamConnection:
        connection = _StreamConnection(self, key)
        self._connections[key] = connection
        assert self._loop is not None
        self._loop.create_task(self._connect(connection))
        return connection

    async def _connect(self, connection: _StreamConnection) -> None:
        assert self._loop is not None
        transport, (host, port) = connection.key
        ssl_context = self._tls() if transport.is_tls else None
        try:
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                ),
                timeout=self.config.connect_timeout,
            )
        except Exception as exc:  # refused, timed out, TLS verification failed, ...
            self.stats.connect_failures += 1
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self._log.warning("%s connection to %s:%s failed: %s", transport, host, port, why)
            connection.fail()
            return
        self.stats.connections_opened += 1

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=self.config.tls_ca_file
            )
            context.check_hostname = True
            context.verify_mode = ssl.CERT_REQUIRED
            if self.config.tls_cert_file:
                context.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
            self._tls_context = context
        return self._tls_context

    # -- receiving and loss ----------------------------------------------------------------

    def _deliver(self, data: bytes, source: Address, transport: Transport) -> None:
        try:
            self._on_receive(data, source, transport)
        except Exception:
            self.stats.callback_errors += 1
            self._log.exception("receive callback failed for %d bytes from %s", len(data), source)

    def _report_lost(self, transport: Transport, address: Address) -> None:
        try:
            self._on_connection_lost(transport, address)
        except Exception:
            self.stats.callback_errors += 1
            self._log.exception("connection-lost callback failed for %s %s", transport, address)

    def _forget(self, connection: _StreamConnection, *, report: bool) -> None:
        if self._connections.get(connection.key) is connection:
            del self._connections[connection.key]
        if report and not self._closed:
            self.stats.connections_lost += 1
            self._report_lost(*connection.key)

    def _schedule_sweep(self) -> None:
        if self._closed or self._loop is None:
            return
        interval = max(0.05, min(self.config.idle_timeout / 2, 30.0))
        self._sweeper = self._loop.call_later(interval, self._sweep_idle)

    def _sweep_idle(self) -> None:
        self.stats.idle_sweeps += 1
        deadline = time.monotonic() - self.config.idle_timeout
        for key, connection in list(self._connections.items()):
            if key not in self._users and connection.last_activity < deadline:
                self.stats.connections_closed_idle += 1
                self._log.debug("closing idle %s connection to %s", *key)
                self._connections.pop(key, None)
                connection.close_quietly()
        self._schedule_sweep()


class _StreamConnection(asyncio.Protocol):
    """One pooled TCP/TLS connection: queues bytes until connected, frames what arrives."""

    def __init__(self, owner: Transports, key: tuple[Transport, Address]) -> None:
        self.owner = owner
        self.key = key
        self.framer = StreamFramer(owner.config.max_message)
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.last_activity = time.monotonic()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.quiet = False  # closed on purpose: do not report it as lost
        self.pings_answered = 0

    def write(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.quiet:  # closed while the handshake was in flight
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.pending:
            transport.writelines(self.pending)
            self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        owner = self.owner
        transport_kind, address = self.key
        try:
            messages = self.framer.feed(data)
        except StreamFramingError as exc:
            messages = exc.framed
            owner.stats.stream_framing_errors += 1
            owner._log.warning(
                "closing %s connection to %s: unframeable stream: %s", transport_kind, address, exc
            )
            self._deliver_all(messages)
            if self.transport is not None:
                self.transport.abort()
            return
        except SipParseError as exc:  # pragma: no cover - feed only raises StreamFramingError
            owner._log.warning("framing error from %s: %s", address, exc)
            return
        self._deliver_all(messages)
        pings = self.framer.pings_received
        if pings > self.pings_answered and self.transport is not None:
            self.transport.write(_PONG * (pings - self.pings_answered))
            owner.stats.stream_pings_answered += pings - self.pings_answered
            self.pings_answered = pings

    def _deliver_all(self, messages: list[bytes]) -> None:
        if not messages:
            return
        transport_kind, address = self.key
        self.owner.stats.stream_messages_in += len(messages)
        for message in messages:
            self.owner._deliver(message, address, transport_kind)
        self.owner._end_batch()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if exc is not None:
            self.owner._log.info("%s connection to %s lost: %s", *self.key, exc)
        self.owner._forget(self, report=not self.quiet)

    def fail(self) -> None:
        """The connection never opened: drop queued bytes and report it lost."""
        self.pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        self.owner._forget(self, report=not self.quiet)

    def close_quietly(self) -> None:
        self.quiet = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()
        # still connecting: connection_made closes it, or fail() completes `closed`


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
