"""LegManager on real loopback sockets with a scripted far end: input is handled before timers."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time

import pytest

from sipstack.config import CoreConfig, TimerConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.errors import SipParseError
from sipstack.message import parse_message
from sipstack.transport import Transport
from tests.waiting import eventually
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

pytestmark = pytest.mark.timeout(30)


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
            # The loop timer armed for Timer A is overdue by now, so it fires once the loop
            # runs again: by then the core has either retransmitted or (right) seen the 180.
            await eventually(
                lambda: stats.messages_received >= 401 and manager.stats.timer_fires >= 1,
                "every datagram read and the overdue timer fired",
            )
            assert stats.parse_errors == 400
            assert stats.retransmissions == 0
            # And none can come later: the 180 stopped Timers A and B, so the next deadline
            # is the ring timeout (CoreConfig.max_ring_time after the dial).
            next_deadline = manager.core.next_deadline()
            assert next_deadline is not None
            assert next_deadline - time.time() > CoreConfig().max_ring_time - 10
            assert received(far_end) == []
            assert not manager.is_leg_established(call_id)
            manager.send_cancel(call_id)
        await manager.close(timeout=0.5)

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_unreadable_messages_are_logged_with_source_and_error_first_few_then_sampled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage = [b"junk %d\r\n\r\n" % index for index in range(12)]
    errors = []
    for data in garbage:
        with pytest.raises(SipParseError) as caught:
            parse_message(data)
        errors.append(str(caught.value))

    async def scenario() -> None:
        manager = LegManager(
            CoreConfig(), TransportConfig(), bad_input_log_first=3, bad_input_log_every=5
        )
        await manager.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            for data in garbage:
                sender.sendto(data, manager.local_address)
            stats = manager.core.stats
            await eventually(lambda: stats.parse_errors == len(garbage), "every datagram")
            source = f"127.0.0.1:{sender.getsockname()[1]}"
        await manager.close(timeout=0.5)
        logged = [r.getMessage() for r in caplog.records if " dropped: " in r.getMessage()]
        numbers = [1, 2, 3, 5, 10]  # the first 3, then every 5th
        assert len(logged) == len(numbers), logged
        for number, line in zip(numbers, logged, strict=True):
            head = f"unreadable message #{number} from {source} over udp dropped: "
            assert line.startswith(head + errors[number - 1]), line

    with caplog.at_level(logging.WARNING, logger="workers.signaling.manager"):
        asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_hook_takes_several_subscribers_in_order() -> None:
    seen: list[str] = []
    hooks = ManagerHooks(on_leg_removed=lambda call_id: seen.append(f"first {call_id}"))
    hooks.subscribe("on_leg_removed", lambda call_id: seen.append(f"second {call_id}"))
    hooks.subscribe("on_signaling_sent", lambda *message: seen.append("sent"))
    for hook in hooks.subscribers("on_leg_removed"):
        hook("c1")
    assert seen == ["first c1", "second c1"]
    assert len(hooks.subscribers("on_signaling_sent")) == 1
    assert hooks.subscribers("on_event") == ()
    with pytest.raises(ValueError, match="no notification hook 'pre_ack'"):
        hooks.subscribe("pre_ack", lambda event: None)  # type: ignore[arg-type]
