"""Transports against SIPp over UDP, TCP and TLS (stunnel in front of SIPp, name verified)."""

from __future__ import annotations

import asyncio

import pytest

from sipstack.transport import Address, Transport
from tests.sipp.harness import (  # noqa: F401  (sip_peers, test_pki: fixtures)
    SipPeerFactory,
    TestPki,
    requires_sipp,
    requires_stunnel,
    sip_peers,
    test_pki,
)
from workers.signaling.transports import TransportConfig, Transports

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(60), requires_sipp]


def options_request(transport: Transport, local: Address, peer: str) -> bytes:
    host, port = local
    return (
        f"OPTIONS sip:ping@{peer} SIP/2.0\r\n"
        f"Via: {transport.via_token} {host}:{port};branch=z9hG4bK-opt{transport}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@{host}>;tag=t-{transport}\r\n"
        f"To: <sip:ping@{peer}>\r\n"
        f"Call-ID: options-{transport}@{host}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:tester@{host}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("transport", ["udp", "tcp", pytest.param("tls", marks=requires_stunnel)])
def test_options_round_trip_with_sipp(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_options.xml", transport)
    kind = Transport.parse(transport)
    received: list[tuple[bytes, Address, Transport]] = []
    lost_before_answer: list[tuple[Transport, Address]] = []

    async def scenario() -> None:
        transports = Transports(
            TransportConfig(tls_ca_file=str(test_pki.ca_file)),
            lambda data, source, t: received.append((data, source, t)),
            # SIPp may close its side once its call is over; only a loss before that counts.
            lambda t, address: None if received else lost_before_answer.append((t, address)),
        )
        await transports.start()
        destination = (peer.host, peer.port)
        transports.send(
            options_request(kind, transports.local_address(), peer.address), kind, destination
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not received and not lost_before_answer and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await transports.close()

    asyncio.run(scenario())
    result = peer.wait(timeout=15)
    assert lost_before_answer == []
    assert len(received) == 1, result.explain()
    data, source, delivered_over = received[0]
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
    assert delivered_over is kind
    if kind.is_connection_oriented:
        assert source == (peer.host, peer.port)  # the pooled peer, named as we dialled it
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
