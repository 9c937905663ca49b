"""SIP transports on asyncio: one shared UDP socket, TCP/TLS listeners and a pool of
connections per peer (dialled out or accepted).

Over 500 lines on purpose: `Transports` is the one owner of every socket (UDP, listeners, the
pool, keep-alives), and `_StreamConnection` is its pool's protocol, sharing its state and
limits; split apart, each would reach into the other's internals."""

from __future__ import annotations

import asyncio
import errno
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

_PING = b"\r\n\r\n"  # RFC 5626 §3.5.1 keep-alive: a double CRLF, answered by one CRLF
_PONG = b"\r\n"
_UDP_KEEPALIVES = frozenset({b"", b"\r\n", b"\r\n\r\n"})

# Connections accepted per listener wake-up, for the same reason as _UDP_BATCH.
_ACCEPT_BATCH = 64
# An ephemeral UDP port whose number is taken for TCP: pick another UDP port this many times.
_BIND_ATTEMPTS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """Where to bind and how to treat pooled connections.

    `tls_ca_file` None trusts the system store. TLS always verifies the server's certificate
    against the host part of the address sent to: a name is checked as a name (never its IP).

    Listeners (RFC 3261 §18.2.1: a peer may open its own connection to send us a request or a
    response): TCP on the UDP port number unless `tcp_port` says otherwise; TLS only when
    `tls_server_cert_file` is set, on `tls_port`, by default the UDP port + 1 (5061 beside
    5060) or any free port when the UDP port is chosen by the system. Peers' certificates are
    not asked for. Beyond `max_inbound_connections` open at once, new ones are refused.

    `keepalive_interval` (seconds, None: off) sends a CRLF ping (RFC 5626 §3.5.1) on every
    TCP/TLS connection a leg uses that has been quiet for that long, so a proxy or NAT in the
    path does not take it for idle; the peer's CRLF pongs are counted.
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
    listen_tcp: bool = True
    tcp_port: int | None = None  # None: the UDP port number
    tls_server_cert_file: str | None = None  # the TLS listener's certificate chain (PEM)
    tls_server_key_file: str | None = None  # None: the key is in the certificate file
    tls_port: int | None = None  # None: see above
    max_inbound_connections: int = 1024
    listen_backlog: int = 128
    keepalive_interval: float | None = None

    def __post_init__(self) -> None:
        if self.keepalive_interval is not None and self.keepalive_interval <= 0:
            raise ValueError(f"keepalive_interval must be positive, got {self.keepalive_interval}")


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
    stream_pings_sent: int = 0
    stream_pongs_received: int = 0
    connections_opened: int = 0
    connect_failures: int = 0
    connections_lost: int = 0
    connections_closed_idle: int = 0
    idle_sweeps: int = 0
    callback_errors: int = 0
    resolve_failures: int = 0
    inbound_accepted: int = 0
    inbound_refused: int = 0  # over max_inbound_connections
    inbound_handshake_failures: int = 0
    accept_errors: int = 0


class Transports:
    """Send SIP bytes by (transport, address) and deliver what arrives to one callback.

    `send` never blocks and never raises for network trouble: stream connections open in the
    background, their queued bytes go out once connected, and a failure to connect or a loss
    of a connection is reported through `on_connection_lost(transport, address)`.
    A connection a peer opens to our listener joins the pool under the peer's address, so
    what we send to that address (say the 200 to its BYE) goes back on it.
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
        # Every live connection; one displaced from the pool by a newer connection to the same
        # peer address still delivers what arrives on it until it closes.
        self._streams: set[_StreamConnection] = set()
        self._listeners: dict[Transport, socket.socket] = {}
        self._listen_addresses: dict[Transport, Address] = {}
        self._server_tls_context: ssl.SSLContext | None = None
        self._inbound_open = 0
        self._adopting: set[asyncio.Task[None]] = set()
        self._users: dict[tuple[Transport, Address], int] = {}
        self._resolved: dict[str, str] = {}
        self._resolving: dict[str, list[tuple[bytes, int]]] = {}
        self._tls_context: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._pinger: asyncio.TimerHandle | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP socket and the listeners (see `local_address`); OSError names what
        could not be bound or loaded."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.config.tls_server_cert_file:
            self._server_tls_context = self._server_tls()
        for attempt in range(_BIND_ATTEMPTS):
            udp = self._bind_udp()
            udp_port = int(udp.getsockname()[1])
            try:
                listeners = self._bind_listeners(udp_port)
            except _PortTaken:
                udp.close()
                if attempt + 1 < _BIND_ATTEMPTS:
                    continue
                raise
            except OSError:
                udp.close()
                raise
            break
        self._udp = udp
        loop.add_reader(udp.fileno(), self._read_udp)
        bound = udp.getsockname()
        self._udp_address = (bound[0], bound[1])
        for kind, listener in listeners.items():
            self._listeners[kind] = listener
            name = listener.getsockname()
            self._listen_addresses[kind] = (name[0], name[1])
            loop.add_reader(listener.fileno(), self._accept, kind, listener)
        self._schedule_sweep()
        self._schedule_pings()

    def _family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.config.bind_host else socket.AF_INET

    def _bind_udp(self) -> socket.socket:
        sock = socket.socket(self._family(), socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.udp_receive_buffer)
            sock.bind((self.config.bind_host, self.config.udp_port))
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"cannot bind UDP {self.config.bind_host}:{self.config.udp_port}: {exc}"
            ) from exc
        sock.setblocking(False)
        return sock

    def _bind_listeners(self, udp_port: int) -> dict[Transport, socket.socket]:
        """Listening sockets for TCP and TLS; _PortTaken when a port derived from a
        system-chosen UDP port is in use (another UDP port may do)."""
        config = self.config
        wanted: list[tuple[Transport, int, bool]] = []  # (kind, port, derived from UDP's)
        ephemeral = config.udp_port == 0
        if config.listen_tcp:
            if config.tcp_port is None:
                wanted.append((Transport.TCP, udp_port, ephemeral))
            else:
                wanted.append((Transport.TCP, config.tcp_port, False))
        if config.tls_server_cert_file:
            if config.tls_port is not None:
                wanted.append((Transport.TLS, config.tls_port, False))
            else:
                wanted.append((Transport.TLS, 0 if ephemeral else udp_port + 1, False))
        bound: dict[Transport, socket.socket] = {}
        try:
            for kind, port, derived in wanted:
                bound[kind] = self._bind_listener(kind, port, derived)
        except OSError:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    def _bind_listener(self, kind: Transport, port: int, derived: bool) -> socket.socket:
        sock = socket.socket(self._family(), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.config.bind_host, port))
            sock.listen(self.config.listen_backlog)
        except OSError as exc:
            sock.close()
            what = f"cannot listen on {kind} {self.config.bind_host}:{port}: {exc}"
            if derived and exc.errno == errno.EADDRINUSE:
                raise _PortTaken(exc.errno, what) from exc
            raise OSError(exc.errno, what) from exc
        sock.setblocking(False)
        return sock

    def _server_tls(self) -> ssl.SSLContext:
        cert, key = self.config.tls_server_cert_file, self.config.tls_server_key_file
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(cert), key)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(
                errno.EINVAL, f"cannot load the TLS server certificate {cert} (key {key}): {exc}"
            ) from exc
        return context

    def local_address(self, transport: Transport = Transport.UDP) -> Address:
        """Where peers reach us over `transport`: the UDP socket's or that listener's address.

        LookupError when nothing listens for `transport`: another transport's port must never
        be advertised for it (RFC 3261 §18.2.1: a far end opens a connection to our Contact
        and Via, and a TLS handshake on a TCP port, or any connection to a UDP one, fails).
        """
        if self._udp_address is None:
            raise RuntimeError("Transports.start() has not been awaited")
        if transport is Transport.UDP:
            return self._udp_address
        address = self._listen_addresses.get(transport)
        if address is None:
            raise LookupError(f"no {transport} listener: nothing to advertise for {transport}")
        return address

    def advertised_addresses(self) -> dict[Transport, Address]:
        """The address of every transport we listen on (UDP always)."""
        return {kind: self.local_address(kind) for kind in Transport
                if kind is Transport.UDP or kind in self._listen_addresses}

    def is_listening(self, transport: Transport) -> bool:
        return transport in self._listeners

    async def close(self) -> None:
        """Close the sockets and every connection; nothing is reported as lost."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._pinger is not None:
            self._pinger.cancel()
        for listener in self._listeners.values():
            if self._loop is not None:
                self._loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners.clear()
        adopting = list(self._adopting)
        for task in adopting:
            task.cancel()
        if adopting:
            await asyncio.gather(*adopting, return_exceptions=True)
        connections = list(self._streams)
        self._connections.clear()
        self._streams.clear()
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
        """Pooled connections, dialled out or accepted."""
        return len(self._connections)

    def inbound_connection_count(self) -> int:
        """Accepted connections open now (those still in their TLS handshake included)."""
        return self._inbound_open

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
        self._streams.add(connection)
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

    # -- accepting -------------------------------------------------------------------------

    def _accept(self, kind: Transport, listener: socket.socket) -> None:
        assert self._loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: leave it in the backlog
                self.stats.accept_errors += 1
                self._log.warning("accepting a %s connection failed: %s", kind, exc)
                return
            if self._inbound_open >= self.config.max_inbound_connections:
                self.stats.inbound_refused += 1
                self._log.warning(
                    "refused a %s connection from %s:%s: %d inbound connections already open",
                    kind, peer[0], peer[1], self._inbound_open,
                )
                sock.close()
                continue
            self._inbound_open += 1
            self.stats.inbound_accepted += 1
            connection = _StreamConnection(self, (kind, (peer[0], peer[1])), inbound=True)
            task = self._loop.create_task(self._adopt(connection, sock))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, connection: _StreamConnection, sock: socket.socket) -> None:
        """Wrap an accepted socket (TLS handshake first); the connection joins the pool in
        its connection_made."""
        assert self._loop is not None
        kind, (host, port) = connection.key
        tls = self._server_tls_context if kind.is_tls else None
        try:
            await self._loop.connect_accepted_socket(
                lambda: connection,
                sock,
                ssl=tls,
                ssl_handshake_timeout=self.config.connect_timeout if tls is not None else None,
            )
        except asyncio.CancelledError:
            connection.free_inbound_slot()
            raise
        except Exception as exc:  # handshake failed or timed out, peer reset, ...
            self.stats.inbound_handshake_failures += 1
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self._log.warning("inbound %s connection from %s:%s failed: %s", kind, host, port, why)
            sock.close()
            connection.free_inbound_slot()

    def _pool_inbound(self, connection: _StreamConnection) -> None:
        """The newest connection to a peer address is the one we send on (§18.2.2: the
        response goes back on the connection its request came on)."""
        displaced = self._connections.get(connection.key)
        if displaced is not None:
            self._log.info("%s connection from %s replaces the pooled one", *connection.key)
        self._connections[connection.key] = connection
        self._streams.add(connection)

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
        self._streams.discard(connection)
        connection.free_inbound_slot()
        if self._connections.get(connection.key) is not connection:
            return  # displaced or already dropped: the pooled connection speaks for the peer
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
        for connection in list(self._streams):
            key = connection.key
            pooled = self._connections.get(key) is connection
            if connection.last_activity >= deadline or (pooled and key in self._users):
                continue
            self.stats.connections_closed_idle += 1
            self._log.debug("closing idle %s connection with %s", *key)
            if pooled:
                del self._connections[key]
            self._streams.discard(connection)
            connection.close_quietly()
        self._schedule_sweep()


    def _schedule_pings(self) -> None:
        interval = self.config.keepalive_interval
        if interval is None or self._closed or self._loop is None:
            return
        self._pinger = self._loop.call_later(max(0.05, interval / 4), self._ping_quiet)

    def _ping_quiet(self) -> None:
        """A CRLF ping on every pooled connection a leg uses that was quiet for
        keepalive_interval seconds (one nobody uses is left to close when idle)."""
        interval = self.config.keepalive_interval
        assert interval is not None
        quiet_since = time.monotonic() - interval
        for key in self._users:
            connection = self._connections.get(key)
            if connection is None or connection.transport is None:
                continue
            if connection.last_activity <= quiet_since:
                connection.write(_PING)
                self.stats.stream_pings_sent += 1
        self._schedule_pings()


class _PortTaken(OSError):
    """A listener's port, derived from a system-chosen UDP port, is already in use."""


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection (dialled or accepted): queues bytes until connected, frames
    what arrives."""

    def __init__(
        self, owner: Transports, key: tuple[Transport, Address], *, inbound: bool = False
    ) -> None:
        self.owner = owner
        self.key = key
        self.inbound = inbound
        self._holds_inbound_slot = inbound
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
        if self.quiet or (self.inbound and self.owner._closed):
            transport.close()  # closed while the handshake was in flight
            return
        if self.inbound:
            self.owner._pool_inbound(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.pending:
            transport.writelines(self.pending)
            self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        owner = self.owner
        if data == _PONG and not self.framer.pending:
            owner.stats.stream_pongs_received += 1  # the answer to our ping (RFC 5626 §4.4.1)
        transport_kind, address = self.key
        try:
            messages = self.framer.feed(data)
        except StreamFramingError as exc:
            messages = exc.framed
            owner.stats.stream_framing_errors += 1
            owner._log.warning(
                "closing %s connection with %s: unframeable stream: %s",
                transport_kind, address, exc,
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

    def free_inbound_slot(self) -> None:
        """Count this accepted connection out of the open ones (once)."""
        if self._holds_inbound_slot:
            self._holds_inbound_slot = False
            self.owner._inbound_open -= 1

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
