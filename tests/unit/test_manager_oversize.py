"""LegManager over real sockets: an INVITE too big for UDP goes over TCP with a TCP Via, and
the rest of its transaction (the CANCEL, the ACK of the 487) follows it there (RFC 3261
§18.1.1, §9.1, §17.1.1.3), though the core built them all for UDP."""

from __future__ import annotations

import asyncio

import pytest

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import LegCancelled, LegEvent
from sipstack.transport import Transport
from tests.unit.test_manager_lost_connection import WAIT, TcpFarEnd, respond
from tests.waiting import eventually
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

pytestmark = pytest.mark.timeout(30)


def test_the_cancel_and_ack_of_an_invite_moved_to_tcp_follow_it() -> None:
    async def main() -> None:
        far = TcpFarEnd()
        port = await far.start()
        events: list[LegEvent] = []
        manager = LegManager(CoreConfig(), TransportConfig(), ManagerHooks(on_event=events.append))
        await manager.start()
        try:
            call_id = await manager.dial(DialRequest(
                target=DialTarget(request_uri=f"sip:service@127.0.0.1:{port}",
                                  signaling_addr=f"127.0.0.1:{port}", transport=Transport.UDP),
                correlation_id="big-1", identity_header="x" * 1400,
            ))  # fmt: skip
            finished = manager.leg_finished(call_id)
            connection = await far.next_connection()
            invite = await connection.receive()
            tcp_via = invite.header("via") or ""
            ours = manager.transports.local_address(Transport.TCP)
            assert tcp_via.startswith(f"SIP/2.0/TCP 127.0.0.1:{ours[1]};branch=")
            connection.send(respond(invite, 180))
            await eventually(lambda: any(e.status_code == 180 for e in events), "the 180")
            manager.send_cancel(call_id)
            cancel = await connection.receive()
            assert cancel.method == "CANCEL" and cancel.header("via") == tcp_via
            connection.send(respond(cancel, 200))
            connection.send(respond(invite, 487))
            ack = await connection.receive()
            assert ack.method == "ACK" and ack.header("via") == tcp_via
            ended = await asyncio.wait_for(finished, WAIT)
            assert isinstance(ended, LegCancelled)
            assert manager.transports.stats.udp_datagrams_out == 0
        finally:
            await manager.close(timeout=1)
            await far.close()

    asyncio.run(asyncio.wait_for(main(), 25))


class _UdpFarEnd(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.put_nowait(data)


def test_a_udp_only_core_config_keeps_a_big_invite_on_udp_through_the_manager() -> None:
    """The manager sends what the core chose: CoreConfig.udp_only (the trunk's key, set by the
    worker) is the one switch, and no shell rule moves the INVITE to TCP behind the core."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        udp_transport, far = await loop.create_datagram_endpoint(
            _UdpFarEnd, local_addr=("127.0.0.1", 0)
        )
        port = udp_transport.get_extra_info("sockname")[1]
        manager = LegManager(CoreConfig(udp_only=True), TransportConfig())
        await manager.start()
        try:
            await manager.dial(DialRequest(
                target=DialTarget(request_uri=f"sip:service@127.0.0.1:{port}",
                                  signaling_addr=f"127.0.0.1:{port}", transport=Transport.UDP),
                correlation_id="big-udp", identity_header="x" * 1400,
            ))  # fmt: skip
            data = await asyncio.wait_for(far.received.get(), WAIT)
            assert data.startswith(b"INVITE ") and len(data) > 1300
            assert b"\r\nVia: SIP/2.0/UDP 127.0.0.1:" in data
        finally:
            await manager.close(timeout=1)
            udp_transport.close()

    asyncio.run(asyncio.wait_for(main(), 25))
