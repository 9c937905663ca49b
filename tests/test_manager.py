"""LegManager on real loopback sockets with a scripted far end: input is handled before timers."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable

import pytest

from sipstack.config import CoreConfig, TimerConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.transport import Transport
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

pytestmark = pytest.mark.timeout(30)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def ringing_for(invite: bytes) -> bytes:
    def header(name: bytes) -> bytes:
        match = re.search(rb"^" + name + rb":[^\r\n]*", invite, re.M | re.I)
        assert match, name
        return match.group(0)

    return b"\r\n".join(
        [
            b"SIP/2.0 180 Ringing",
            header(b"Via"),
            header(b"From"),
            header(b"To") + b";tag=far",
            header(b"Call-ID"),
            header(b"CSeq"),
            b"Content-Length: 0",
            b"",
            b"",
        ]
    )


def received(far_end: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(far_end.recv(65535))
        except BlockingIOError:
            return datagrams


def test_responses_waiting_in_the_socket_are_seen_before_a_retransmission_timer() -> None:
    """A loop that fell behind must not retransmit an INVITE whose 180 is already queued."""

    async def scenario() -> None:
        timers = TimerConfig(t1=0.05, t2=0.4, t4=0.5)
        manager = LegManager(CoreConfig(timers=timers), TransportConfig(), ManagerHooks())
        await manager.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far_end:
            far_end.bind(("127.0.0.1", 0))
            far_end.setblocking(False)
            port = far_end.getsockname()[1]
            target = DialTarget(
                request_uri=f"sip:bob@127.0.0.1:{port}",
                signaling_addr=f"127.0.0.1:{port}",
                transport=Transport.UDP,
            )
            call_id = await manager.dial(DialRequest(target=target))
            invites: list[bytes] = []

            def invite_arrived() -> bool:
                invites.extend(received(far_end))
                return bool(invites)

            await eventually(invite_arrived, "the INVITE")
            ours = manager.local_address
            # More junk than one read burst takes, then the 180, all while the loop is busy
            # past Timer A (time.sleep blocks the loop on purpose: it is the busy loop).
            for index in range(400):
                far_end.sendto(b"junk %d" % index, ours)
            far_end.sendto(ringing_for(invites[0]), ours)
            time.sleep(3 * timers.t1)
            stats = manager.core.stats
            await eventually(lambda: stats.messages_received >= 401, "every datagram read")
            await asyncio.sleep(4 * timers.t1)  # let any (wrong) retransmission go out
            assert stats.parse_errors == 400
            assert stats.retransmissions == 0
            assert received(far_end) == []
            assert not manager.is_leg_established(call_id)
            manager.send_cancel(call_id)
        await manager.close(timeout=0.5)

    asyncio.run(asyncio.wait_for(scenario(), 20))
