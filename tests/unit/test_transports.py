"""Transports on real loopback sockets: UDP, the TCP/TLS pool, framing, loss, idle, TLS names."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sipstack.transport import Address, Transport
from tests.sipp.harness import TestPki
from tests.transport_recorder import Recorder
from tests.waiting import eventually
from workers.signaling.transports import TransportConfig, Transports

pytestmark = pytest.mark.timeout(30)

OPTIONS = (
    b"OPTIONS sip:peer@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-t1\r\n"
    b"Call-ID: t1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
BYE_WITH_BODY = (
    b"BYE sip:uac@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5998;branch=z9hG4bK-t2\r\n"
    b"Call-ID: t2@127.0.0.1\r\nCSeq: 7 BYE\r\nl: 4\r\n\r\nbody"
)
RESPONSE_200 = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-t1\r\n"
    b"Call-ID: t1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=20))


class StreamServer:
    """A real asyncio TCP (optionally TLS) server recording connections and bytes."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.data = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> StreamServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while chunk := await reader.read(65536):
            self.data += chunk

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def server_tls_context(pki: TestPki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


# -- UDP --------------------------------------------------------------------------------------


def test_udp_send_and_receive_through_one_shared_socket() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        loop = asyncio.get_running_loop()
        peer_inbox: list[tuple[bytes, Any]] = []

        class Peer(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                peer_inbox.append((data, addr))

        peer, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        peer_address = peer.get_extra_info("sockname")[:2]
        transports.send(OPTIONS, Transport.UDP, peer_address)
        transports.send(OPTIONS, Transport.UDP, peer_address)
        await eventually(lambda: len(peer_inbox) == 2, "two datagrams at the peer")
        ours = transports.local_address(Transport.UDP)
        assert [addr[1] for _, addr in peer_inbox] == [ours[1], ours[1]]  # one socket for both
        assert peer_inbox[0][0] == OPTIONS

        peer.sendto(RESPONSE_200, ours)
        await eventually(lambda: len(recorder.received) == 1, "the response delivered")
        assert recorder.received == [(RESPONSE_200, peer_address, Transport.UDP)]
        peer.close()
        await transports.close()

    run(scenario)


def test_udp_keepalives_are_dropped_and_garbage_is_delivered_for_the_core_to_count() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        loop = asyncio.get_running_loop()
        peer, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        ours = transports.local_address()
        for datagram in (b"\r\n\r\n", b"\r\n", b"\x00\xffgarbage", RESPONSE_200):
            peer.sendto(datagram, ours)
        await eventually(lambda: transports.stats.udp_datagrams_in == 4, "four datagrams")
        assert [data for data, _, _ in recorder.received] == [b"\x00\xffgarbage", RESPONSE_200]
        assert transports.stats.udp_keepalives_in == 2
        peer.close()
        await transports.close()

    run(scenario)


def test_udp_to_a_host_name_resolves_it_and_sends() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        loop = asyncio.get_running_loop()
        inbox: list[bytes] = []

        class Peer(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                inbox.append(data)

        peer, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        port = peer.get_extra_info("sockname")[1]
        transports.send(b"first", Transport.UDP, ("localhost", port))
        transports.send(b"second", Transport.UDP, ("localhost", port))  # queued behind lookup
        await eventually(lambda: len(inbox) == 2, "both datagrams")
        assert inbox == [b"first", b"second"]
        peer.close()
        await transports.close()

    run(scenario)


def test_unresolvable_udp_host_is_reported_lost_not_raised() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        transports.send(OPTIONS, Transport.UDP, ("no-such-host.invalid", 5060))
        await eventually(lambda: bool(recorder.lost), "the loss report")
        assert recorder.lost == [(Transport.UDP, ("no-such-host.invalid", 5060))]
        assert transports.stats.resolve_failures == 1
        await transports.close()

    run(scenario)


# -- TCP --------------------------------------------------------------------------------------


def test_tcp_connection_is_opened_once_and_reused_for_every_send_to_that_peer() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        server = await StreamServer().start()
        address = ("127.0.0.1", server.port)
        for _ in range(3):
            transports.send(OPTIONS, Transport.TCP, address)
        await eventually(lambda: len(server.data) == 3 * len(OPTIONS), "three messages")
        assert len(server.writers) == 1
        assert transports.connection_count() == 1
        assert bytes(server.data) == OPTIONS * 3
        await transports.close()
        await server.close()

    run(scenario)


def test_requests_and_responses_arriving_on_a_connection_are_delivered_whole() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        server = await StreamServer().start()
        address = ("127.0.0.1", server.port)
        transports.send(OPTIONS, Transport.TCP, address)
        await eventually(lambda: bool(server.writers), "the connection")
        stream = RESPONSE_200 + b"\r\n" + BYE_WITH_BODY
        writer = server.writers[0]
        for start in range(0, len(stream), 7):  # dribble it in small pieces
            writer.write(stream[start : start + 7])
            await writer.drain()
        await eventually(lambda: len(recorder.received) == 2, "both messages")
        assert recorder.received == [
            (RESPONSE_200, address, Transport.TCP),
            (BYE_WITH_BODY, address, Transport.TCP),
        ]
        await transports.close()
        await server.close()

    run(scenario)


def test_a_double_crlf_ping_on_a_connection_is_answered_with_a_pong() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        server = await StreamServer().start()
        transports.send(OPTIONS, Transport.TCP, ("127.0.0.1", server.port))
        await eventually(lambda: len(server.data) == len(OPTIONS), "the request")
        server.writers[0].write(b"\r\n\r\n")
        await eventually(lambda: len(server.data) == len(OPTIONS) + 2, "the pong")
        assert bytes(server.data).endswith(b"\r\n")
        assert transports.stats.stream_pings_answered == 1
        await transports.close()
        await server.close()

    run(scenario)


def test_refused_connection_is_reported_lost_with_its_transport_and_address() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        server = await StreamServer().start()
        port = server.port
        await server.close()  # nobody listens there now
        transports.send(OPTIONS, Transport.TCP, ("127.0.0.1", port))
        await eventually(lambda: bool(recorder.lost), "the loss report")
        assert recorder.lost == [(Transport.TCP, ("127.0.0.1", port))]
        assert transports.stats.connect_failures == 1
        assert transports.connection_count() == 0
        await transports.close()

    run(scenario)


def test_connection_closed_by_the_peer_is_reported_and_the_next_send_reconnects() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        server = await StreamServer().start()
        address = ("127.0.0.1", server.port)
        transports.send(OPTIONS, Transport.TCP, address)
        await eventually(lambda: len(server.data) == len(OPTIONS), "the request")
        server.writers[0].close()
        await eventually(lambda: bool(recorder.lost), "the loss report")
        assert recorder.lost == [(Transport.TCP, address)]
        transports.send(OPTIONS, Transport.TCP, address)
        await eventually(lambda: len(server.writers) == 2, "a second connection")
        await transports.close()
        await server.close()

    run(scenario)


def test_garbage_on_a_connection_is_counted_closes_it_and_keeps_earlier_messages() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports()
        server = await StreamServer().start()
        address = ("127.0.0.1", server.port)
        transports.send(OPTIONS, Transport.TCP, address)
        await eventually(lambda: bool(server.writers), "the connection")
        server.writers[0].write(RESPONSE_200 + b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await eventually(lambda: bool(recorder.lost), "the connection to be dropped")
        assert [data for data, _, _ in recorder.received] == [RESPONSE_200]
        assert transports.stats.stream_framing_errors == 1
        assert transports.connection_count() == 0
        await transports.close()
        await server.close()

    run(scenario)


def test_idle_connection_nobody_uses_is_closed_quietly() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(idle_timeout=0.2)
        server = await StreamServer().start()
        transports.send(OPTIONS, Transport.TCP, ("127.0.0.1", server.port))
        await eventually(lambda: transports.stats.connections_closed_idle == 1, "the idle close")
        assert transports.connection_count() == 0
        assert recorder.lost == []  # closing on purpose is no loss
        await transports.close()
        await server.close()

    run(scenario)


def test_connection_held_by_a_leg_survives_idle_sweeps_until_released() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(idle_timeout=0.2)
        server = await StreamServer().start()
        address = ("127.0.0.1", server.port)
        transports.acquire(Transport.TCP, address)
        transports.send(OPTIONS, Transport.TCP, address)
        sweeps = transports.stats.idle_sweeps
        await eventually(lambda: transports.stats.idle_sweeps >= sweeps + 4, "four sweeps")
        assert transports.has_connection(Transport.TCP, address)
        transports.release(Transport.TCP, address)
        await eventually(lambda: transports.connection_count() == 0, "the idle close")
        await transports.close()
        await server.close()

    run(scenario)


def test_a_raising_receive_callback_is_counted_and_the_loop_carries_on() -> None:
    async def scenario() -> None:
        calls: list[bytes] = []

        def explode(data: bytes, source: Address, transport: Transport) -> None:
            calls.append(data)
            raise RuntimeError("boom")

        transports = Transports(TransportConfig(), explode, lambda t, a: None)
        await transports.start()
        loop = asyncio.get_running_loop()
        peer, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        peer.sendto(RESPONSE_200, transports.local_address())
        peer.sendto(RESPONSE_200, transports.local_address())
        await eventually(lambda: len(calls) == 2, "both deliveries")
        assert transports.stats.callback_errors == 2
        peer.close()
        await transports.close()

    run(scenario)


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def localhost_only_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A certificate naming `localhost` and no IP address."""
    return TestPki.create(tmp_path_factory.mktemp("pki-name"), ip_addresses=())


def test_tls_connects_verifying_the_host_name_and_exchanges_messages(
    localhost_only_pki: TestPki,
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(tls_ca_file=str(localhost_only_pki.ca_file))
        server = await StreamServer().start(server_tls_context(localhost_only_pki))
        address = ("localhost", server.port)
        transports.send(OPTIONS, Transport.TLS, address)
        await eventually(lambda: len(server.data) == len(OPTIONS), "the request over TLS")
        server.writers[0].write(RESPONSE_200)
        await eventually(lambda: bool(recorder.received), "the response over TLS")
        assert recorder.received == [(RESPONSE_200, address, Transport.TLS)]
        assert recorder.lost == []
        await transports.close()
        await server.close()

    run(scenario)


def test_tls_to_the_ip_of_a_name_only_certificate_is_refused(localhost_only_pki: TestPki) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(tls_ca_file=str(localhost_only_pki.ca_file))
        server = await StreamServer().start(server_tls_context(localhost_only_pki))
        address = ("127.0.0.1", server.port)
        transports.send(OPTIONS, Transport.TLS, address)
        await eventually(lambda: bool(recorder.lost), "the failed handshake")
        assert recorder.lost == [(Transport.TLS, address)]
        assert transports.stats.connect_failures == 1
        assert server.data == b""
        await transports.close()
        await server.close()

    run(scenario)


def test_tls_with_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    pki = TestPki.create(tmp_path, dns_names=("sip.example.test",), ip_addresses=())

    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(tls_ca_file=str(pki.ca_file))
        server = await StreamServer().start(server_tls_context(pki))
        transports.send(OPTIONS, Transport.TLS, ("localhost", server.port))
        await eventually(lambda: bool(recorder.lost), "the failed handshake")
        assert transports.stats.connect_failures == 1
        await transports.close()
        await server.close()

    run(scenario)


def test_tls_with_an_untrusted_ca_is_refused(localhost_only_pki: TestPki, tmp_path: Path) -> None:
    other_ca = TestPki.create(tmp_path)

    async def scenario() -> None:
        recorder = Recorder()
        transports = await recorder.transports(tls_ca_file=str(other_ca.ca_file))
        server = await StreamServer().start(server_tls_context(localhost_only_pki))
        transports.send(OPTIONS, Transport.TLS, ("localhost", server.port))
        await eventually(lambda: bool(recorder.lost), "the failed handshake")
        assert server.data == b""
        await transports.close()
        await server.close()

    run(scenario)


def test_send_before_start_is_a_clear_error() -> None:
    transports = Transports(TransportConfig(), lambda d, s, t: None, lambda t, a: None)
    with pytest.raises(RuntimeError, match=r"Transports.start\(\) has not been awaited"):
        transports.send(OPTIONS, Transport.UDP, ("127.0.0.1", 5060))
