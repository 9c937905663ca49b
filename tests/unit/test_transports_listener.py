"""TCP/TLS listeners on real loopback sockets: connections peers open to us are read, answered
on, limited, idle-closed and reported lost like the ones we dial."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import LegEnded, LegEvent
from sipstack.framing import StreamFramer
from sipstack.message import Request, Response, parse_message
from sipstack.transport import Address, Transport
from tests.fakes import FarEnd
from tests.sipp.harness import TestPki, free_ports
from tests.transport_recorder import Recorder
from tests.waiting import eventually
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

pytestmark = pytest.mark.timeout(30)


def options(tag: str) -> bytes:
    return (
        f"OPTIONS sip:uac@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{tag}"
        f"\r\nCall-ID: {tag}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ok(tag: str) -> bytes:
    return (
        f"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{tag}\r\n"
        f"Call-ID: {tag}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=20))


class Peer:
    """A far end that opens its own TCP (or TLS) connection to us and reads framed SIP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = StreamFramer()
        self.inbox: list[bytes] = []
        name = writer.get_extra_info("sockname")
        self.address: Address = (name[0], name[1])  # what we see as its source

    @classmethod
    async def connect(
        cls, address: Address, tls: ssl.SSLContext | None = None, *, server_hostname: str = ""
    ) -> Peer:
        reader, writer = await asyncio.open_connection(
            *address, ssl=tls, server_hostname=server_hostname or None
        )
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_message(self, timeout: float = 5.0) -> bytes:
        while not self.inbox:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                raise AssertionError("connection closed before a message arrived")
            self.inbox.extend(self.framer.feed(chunk))
        return self.inbox.pop(0)

    async def closed_by_the_other_side(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(65536), timeout) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("listener-pki"))


def client_tls(pki: TestPki) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_file))


# -- TCP --------------------------------------------------------------------------------------


def test_a_request_on_a_connection_the_peer_opened_is_delivered_and_answered_on_it() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        udp_host, udp_port = transports.local_address(Transport.UDP)
        assert transports.local_address(Transport.TCP) == (udp_host, udp_port)
        peer = await Peer.connect(transports.local_address(Transport.TCP))
        peer.send(options("in1"))
        await eventually(lambda: bool(recorder.received), "the request")
        assert recorder.received == [(options("in1"), peer.address, Transport.TCP)]

        transports.send(ok("in1"), Transport.TCP, peer.address)  # what the core does: source
        assert await peer.read_message() == ok("in1")
        assert transports.has_connection(Transport.TCP, peer.address)
        assert transports.stats.connections_opened == 0  # nothing was dialled out
        assert transports.stats.inbound_accepted == 1
        assert transports.inbound_connection_count() == 1
        await peer.close()
        await transports.close()

    run(scenario)


def test_the_core_answers_a_bye_sent_on_a_new_connection_on_that_connection() -> None:
    """The far end answers on our connection, then sends its BYE on one it opens itself."""

    async def scenario() -> None:
        events: list[LegEvent] = []
        manager = LegManager(
            CoreConfig(),
            TransportConfig(),
            ManagerHooks(on_event=events.append),
        )
        await manager.start()
        far_end = FarEnd()
        invites: list[Request] = []
        acks: list[Request] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            framer = StreamFramer()
            while chunk := await reader.read(65536):
                for data in framer.feed(chunk):
                    message = parse_message(data)
                    assert isinstance(message, Request)
                    if message.method == "INVITE":
                        invites.append(message)
                        writer.write(bytes(far_end.answer(message)))
                    elif message.method == "ACK":
                        acks.append(message)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        far_end.contact = f"<sip:callee@127.0.0.1:{port};transport=tcp>"
        target = DialTarget(
            request_uri=f"sip:bob@127.0.0.1:{port};transport=tcp",
            signaling_addr=f"127.0.0.1:{port}",
            transport=Transport.TCP,
        )
        call_id = await manager.dial(DialRequest(target=target))
        await eventually(lambda: bool(acks), "the ACK to the 200")

        bye = far_end.request("BYE", invites[0])
        bye.set_header("Via", "SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bKbye1")
        peer = await Peer.connect(manager.transports.local_address(Transport.TCP))
        peer.send(bytes(bye))
        answer = parse_message(await peer.read_message())
        assert isinstance(answer, Response)
        assert (answer.status_code, answer.cseq, answer.call_id) == (200, bye.cseq, call_id)
        await eventually(lambda: any(isinstance(e, LegEnded) for e in events), "the leg's end")
        ended = next(e for e in events if isinstance(e, LegEnded))
        assert ended.cdr.hangup_by == "remote"
        assert manager.transports.stats.connections_lost == 0
        await peer.close()
        await manager.close(timeout=1)
        server.close()
        await server.wait_closed()

    run(scenario)


def test_garbage_on_one_accepted_connection_closes_only_that_one() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        ours = transports.local_address(Transport.TCP)
        noisy, quiet = await Peer.connect(ours), await Peer.connect(ours)
        noisy.send(options("g1") + b"HTTP/1.1 400 Bad Request\r\n\r\n")
        assert await noisy.closed_by_the_other_side()
        await eventually(lambda: bool(recorder.lost), "the loss report")
        assert recorder.lost == [(Transport.TCP, noisy.address)]
        assert [data for data, _, _ in recorder.received] == [options("g1")]
        assert transports.stats.stream_framing_errors == 1

        quiet.send(options("g2"))
        await eventually(lambda: len(recorder.received) == 2, "the other peer's request")
        assert recorder.received[1] == (options("g2"), quiet.address, Transport.TCP)
        transports.send(ok("g2"), Transport.TCP, quiet.address)
        assert await quiet.read_message() == ok("g2")
        assert transports.inbound_connection_count() == 1
        await quiet.close()
        await transports.close()

    run(scenario)


def test_connections_beyond_the_limit_are_refused_and_counted() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(max_inbound_connections=2)
        ours = transports.local_address(Transport.TCP)
        first, second = await Peer.connect(ours), await Peer.connect(ours)
        await eventually(lambda: transports.connection_count() == 2, "two pooled connections")
        third = await Peer.connect(ours)
        assert await third.closed_by_the_other_side()
        assert transports.stats.inbound_refused == 1
        assert transports.inbound_connection_count() == 2

        await first.close()  # a slot frees up
        await eventually(lambda: transports.inbound_connection_count() == 1, "the slot freed")
        fourth = await Peer.connect(ours)
        fourth.send(options("l4"))
        await eventually(lambda: bool(recorder.received), "the request on the new connection")
        assert recorder.received == [(options("l4"), fourth.address, Transport.TCP)]
        assert transports.stats.inbound_accepted == 3
        for peer in (second, third, fourth):
            await peer.close()
        await transports.close()

    run(scenario)


def test_an_idle_accepted_connection_is_closed_quietly_and_a_peer_close_is_reported() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(idle_timeout=0.3)
        ours = transports.local_address(Transport.TCP)
        idle = await Peer.connect(ours)
        idle.send(options("i1"))
        assert await idle.closed_by_the_other_side()
        assert transports.stats.connections_closed_idle == 1
        assert recorder.lost == []  # closing on purpose is no loss
        await eventually(lambda: transports.inbound_connection_count() == 0, "the slot freed")

        leaving = await Peer.connect(ours)
        leaving.send(options("i2"))
        await eventually(lambda: len(recorder.received) == 2, "the second request")
        await leaving.close()
        await eventually(lambda: bool(recorder.lost), "the loss report")
        assert recorder.lost == [(Transport.TCP, leaving.address)]
        assert transports.connection_count() == 0
        await transports.close()

    run(scenario)


def test_an_accepted_connection_from_a_pooled_address_takes_over_sending() -> None:
    """A peer that connects from its listening port (SO_REUSEPORT) replaces our connection
    to that port: what we send goes on the newest, and only its loss is reported."""

    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        dialled: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(65536):
                dialled.append(chunk)

        server = await asyncio.start_server(serve, "127.0.0.1", 0, reuse_port=True)
        far = ("127.0.0.1", server.sockets[0].getsockname()[1])
        transports.send(options("d1"), Transport.TCP, far)
        await eventually(lambda: bool(dialled), "the request on our connection")

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(far)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, transports.local_address(Transport.TCP))
        reader, writer = await asyncio.open_connection(sock=sock)
        peer = Peer(reader, writer)
        assert peer.address == far
        peer.send(options("d2"))
        await eventually(lambda: len(recorder.received) == 1, "the request on its connection")
        transports.send(ok("d2"), Transport.TCP, far)
        assert await peer.read_message() == ok("d2")
        assert b"".join(dialled) == options("d1")
        assert transports.connection_count() == 1

        await peer.close()
        await eventually(lambda: bool(recorder.lost), "the loss report")
        assert recorder.lost == [(Transport.TCP, far)]
        await transports.close()
        server.close()
        await server.wait_closed()

    run(scenario)


# -- TLS --------------------------------------------------------------------------------------


def test_tls_listener_answers_on_the_connection_the_peer_opened(pki: TestPki) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(
            tls_server_cert_file=str(pki.cert_file), tls_server_key_file=str(pki.key_file)
        )
        tls_address = transports.local_address(Transport.TLS)
        assert tls_address != transports.local_address(Transport.TCP)  # both are TCP ports
        peer = await Peer.connect(tls_address, client_tls(pki), server_hostname="localhost")
        peer.send(options("s1"))
        await eventually(lambda: bool(recorder.received), "the request over TLS")
        assert recorder.received == [(options("s1"), peer.address, Transport.TLS)]
        transports.send(ok("s1"), Transport.TLS, peer.address)
        assert await peer.read_message() == ok("s1")
        assert transports.stats.connections_opened == 0
        await peer.close()
        await transports.close()

    run(scenario)


def test_a_failed_tls_handshake_delivers_nothing_and_frees_its_slot(pki: TestPki) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(
            tls_server_cert_file=str(pki.cert_file), tls_server_key_file=str(pki.key_file)
        )
        plain = await Peer.connect(transports.local_address(Transport.TLS))
        plain.send(options("p1"))  # SIP in clear text on the TLS port
        assert await plain.closed_by_the_other_side()
        await eventually(
            lambda: transports.stats.inbound_handshake_failures == 1, "the handshake failure"
        )
        await eventually(lambda: transports.inbound_connection_count() == 0, "the slot freed")
        assert recorder.received == [] and recorder.lost == []
        assert transports.connection_count() == 0
        await plain.close()
        await transports.close()

    run(scenario)


def test_no_tls_listener_without_a_server_certificate() -> None:
    async def scenario() -> None:
        transports = await Recorder().transports()
        assert transports.is_listening(Transport.TCP)
        assert not transports.is_listening(Transport.TLS)
        with pytest.raises(LookupError, match="no tls listener"):
            transports.local_address(Transport.TLS)  # never another transport's port
        assert Transport.TLS not in transports.advertised_addresses()
        await transports.close()

    run(scenario)


# -- configuration ----------------------------------------------------------------------------


def test_a_fixed_udp_port_puts_tcp_on_the_same_number_and_tls_on_the_next(pki: TestPki) -> None:
    port = free_ports(2)

    async def scenario() -> None:
        transports = await Recorder().transports(
            udp_port=port,
            tls_server_cert_file=str(pki.cert_file),
            tls_server_key_file=str(pki.key_file),
        )
        assert transports.local_address(Transport.UDP) == ("127.0.0.1", port)
        assert transports.local_address(Transport.TCP) == ("127.0.0.1", port)
        assert transports.local_address(Transport.TLS) == ("127.0.0.1", port + 1)
        await transports.close()

    run(scenario)


def test_listeners_can_be_moved_or_turned_off() -> None:
    tcp_port = free_ports(1)

    async def scenario() -> None:
        moved = await Recorder().transports(tcp_port=tcp_port)
        assert moved.local_address(Transport.TCP) == ("127.0.0.1", tcp_port)
        off = await Recorder().transports(listen_tcp=False)
        assert not off.is_listening(Transport.TCP)
        with pytest.raises(LookupError):
            off.local_address(Transport.TCP)
        assert list(off.advertised_addresses()) == [Transport.UDP]
        await moved.close()
        await off.close()

    run(scenario)


def test_a_taken_port_or_a_missing_certificate_fails_start_naming_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError, match=f"cannot listen on tcp 127.0.0.1:{port}"):
                await Recorder().transports(tcp_port=port)
        missing = tmp_path / "missing.pem"
        with pytest.raises(OSError, match=f"TLS server certificate {missing}"):
            await Recorder().transports(tls_server_cert_file=str(missing))

    run(scenario)
