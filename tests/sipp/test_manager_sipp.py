"""LegManager and SignalingService driving the real UacCore against SIPp and real sockets."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sipstack.config import CoreConfig, TimerConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.errors import LocalProtocolError
from sipstack.events import AnswerReceived, LegEvent, TerminalEvent
from sipstack.transport import Address, Transport
from tests.sipp.harness import (  # noqa: F401  (sip_peers, test_pki: fixtures)
    SipPeer,
    SipPeerFactory,
    TestPki,
    requires_sipp,
    sip_peers,
    test_pki,
)
from tests.waiting import eventually
from workers.signaling.manager import LegManager, ManagerHooks, SignalingService
from workers.signaling.transports import TransportConfig

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(90), requires_sipp]


@dataclass
class Journal:
    """Everything the hooks saw, in order."""

    events: list[LegEvent] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    sent: list[tuple[bytes, Transport, Address]] = field(default_factory=list)
    adopted: list[tuple[str, str, str]] = field(default_factory=list)

    def hooks(self, **overrides: Any) -> ManagerHooks:
        hooks = ManagerHooks(
            on_event=self.events.append,
            on_leg_removed=self.removed.append,
            on_signaling_sent=lambda data, transport, address: self.sent.append(
                (data, transport, address)
            ),
            on_dialog_call_id_adopted=lambda old, new, corr: self.adopted.append((old, new, corr)),
        )
        for name, value in overrides.items():
            setattr(hooks, name, value)
        return hooks

    def states(self, call_id: str | None = None) -> list[str]:
        return [e.state for e in self.events if call_id is None or e.call_id == call_id]

    def sent_methods(self) -> list[str]:
        return [data.split(b" ", 1)[0].decode() for data, _, _ in self.sent]


def request_to(peer: SipPeer, **fields: Any) -> DialRequest:
    return DialRequest(
        target=DialTarget(
            request_uri=f"sip:service@{peer.address}",
            signaling_addr=peer.address,
            transport=Transport.parse(peer.transport),
        ),
        **fields,
    )


def run(test: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


async def started(
    journal: Journal, *, timers: TimerConfig | None = None, **hooks: Any
) -> LegManager:
    config = CoreConfig(timers=timers) if timers else CoreConfig()
    manager = LegManager(config, TransportConfig(), journal.hooks(**hooks))
    await manager.start()
    return manager


async def finished(manager: LegManager, call_id: str, timeout: float = 20) -> TerminalEvent:
    terminal = await asyncio.wait_for(manager.leg_finished(call_id), timeout)
    assert terminal is not None
    return terminal


def test_answered_call_then_our_bye_runs_every_hook_once(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", "udp")
    journal = Journal()
    established: list[str] = []

    async def scenario() -> None:
        manager = await started(journal, on_established=lambda e: established.append(e.call_id))
        call_id = await manager.dial(request_to(peer, correlation_id="corr-1"))
        await eventually(lambda: manager.is_leg_established(call_id), "the answer")
        manager.send_bye(call_id)
        terminal = await finished(manager, call_id)
        assert terminal.state == "ended"
        assert terminal.cdr.correlation_id == "corr-1"
        assert manager.live_legs() == []
        await manager.close()

    run(scenario)
    assert journal.states()[0] == "invited"
    assert journal.states()[-2:] == ["established", "ended"]
    assert len(established) == 1
    assert len(journal.removed) == 1
    assert journal.sent_methods() == ["INVITE", "ACK", "BYE"]
    assert peer.wait(10).successful_calls == 1


def test_pre_ack_holds_the_ack_until_it_returns(sip_peers: SipPeerFactory) -> None:  # noqa: F811
    peer = sip_peers.start("uas_answer.xml", "udp")
    journal = Journal()
    release = asyncio.Event()
    seen: list[AnswerReceived] = []

    async def pre_ack(event: AnswerReceived) -> None:
        seen.append(event)
        await release.wait()

    async def scenario() -> None:
        manager = await started(journal, pre_ack=pre_ack)
        call_id = await manager.dial(request_to(peer))
        await eventually(lambda: bool(seen), "pre_ack to run")
        assert "ACK" not in journal.sent_methods()
        assert not manager.is_leg_established(call_id)
        release.set()
        await eventually(lambda: manager.is_leg_established(call_id), "the ACK")
        manager.send_bye(call_id)
        await finished(manager, call_id)
        await manager.close()

    run(scenario)
    assert seen[0].status_code == 200 and b"m=audio" in seen[0].sdp
    assert journal.sent_methods() == ["INVITE", "ACK", "BYE"]
    assert peer.wait(10).successful_calls == 1


def test_pre_ack_raising_aborts_the_leg_without_leaving_it_half_open(
    sip_peers: SipPeerFactory,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = sip_peers.start("uas_answer.xml", "udp")
    journal = Journal()

    async def refuse(event: AnswerReceived) -> None:
        raise RuntimeError("no media port left")

    async def scenario() -> None:
        manager = await started(journal, pre_ack=refuse)
        call_id = await manager.dial(request_to(peer, correlation_id="corr-pre-ack"))
        terminal = await finished(manager, call_id)
        refused = [r for r in caplog.records if r.getMessage().startswith("pre_ack refused")]
        # the line carries the call as structured fields, not only in its text
        assert [(r.call_id, r.correlation_id) for r in refused] == [  # type: ignore[attr-defined]
            (call_id, "corr-pre-ack")
        ]
        assert terminal.state in ("failed", "ended")
        assert terminal.cdr.error and "no media port left" in terminal.cdr.error
        assert manager.stats.pre_ack_failures == 1
        assert not [e for e in journal.events if e.state == "established"]
        await manager.close()

    run(scenario)
    assert journal.removed and len(journal.removed) == 1
    assert peer.wait(10).successful_calls == 1  # it got its ACK and then a BYE


def test_raising_hooks_are_counted_and_the_leg_still_completes(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_busy.xml", "udp")
    journal = Journal()

    def explode(*args: Any) -> None:
        raise RuntimeError("hook bug")

    async def scenario() -> None:
        manager = await started(journal, on_event=explode, on_leg_removed=explode)
        call_id = await manager.dial(request_to(peer))
        terminal = await finished(manager, call_id)
        assert terminal.cdr.final_status_code == 486
        assert manager.stats.hook_errors >= 3  # invited, provisional, failed, removed
        assert manager.live_legs() == []
        await manager.close()

    run(scenario)
    assert peer.wait(10).successful_calls == 1


def test_close_cancels_a_ringing_leg_and_waits_for_its_end(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_ring_cancel.xml", "tcp")
    journal = Journal()

    async def scenario() -> None:
        manager = await started(journal)
        call_id = await manager.dial(request_to(peer))
        await eventually(lambda: 180 in [e.status_code for e in journal.events], "the 180")
        await manager.close(timeout=10)
        assert manager.live_legs() == []
        assert journal.events[-1].state == "cancelled"
        assert journal.removed == [call_id]
        with pytest.raises(LocalProtocolError):
            await manager.dial(request_to(peer))

    run(scenario)
    assert peer.wait(10).successful_calls == 1


def test_a_ringing_leg_whose_far_end_died_fails_once_its_cancel_cannot_reach_it(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_ring_cancel.xml", "tcp")
    journal = Journal()

    async def scenario() -> None:
        manager = await started(journal)
        call_id = await manager.dial(request_to(peer))
        await eventually(lambda: 180 in [e.status_code for e in journal.events], "the 180")
        peer.sipp.process.kill()  # type: ignore[union-attr]
        terminal = await finished(manager, call_id)
        assert terminal.state == "failed"
        assert terminal.cdr.error == (
            "connection lost while ringing; CANCEL sent again, its new connection failed too"
        )
        # The CANCEL tried a new connection; refused or reset by the dying process, it is the
        # second loss, which ends the leg.
        assert manager.transports.stats.connections_lost == 2
        assert journal.sent_methods() == ["INVITE", "CANCEL"]
        assert journal.removed == [call_id]
        await manager.close()

    run(scenario)


def test_invite_is_retransmitted_over_udp_until_timer_b(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_silent.xml", "udp", extra_args=("-d", "6000"))
    journal = Journal()
    timers = TimerConfig(t1=0.05, t2=0.4, t4=0.5)

    async def scenario() -> None:
        manager = await started(journal, timers=timers)
        loop = asyncio.get_running_loop()
        began = loop.time()
        call_id = await manager.dial(request_to(peer))
        terminal = await finished(manager, call_id, timeout=15)
        took = loop.time() - began
        assert terminal.state == "failed"
        assert timers.timer_b - 0.1 <= took <= timers.timer_b + 1.5
        assert terminal.cdr.final_status_code in (None, 408)
        await manager.close()

    run(scenario)
    # Timer A doubles from T1: retransmissions 0.05, 0.15, 0.35, 0.75, 1.55 and 3.15 s after
    # the first INVITE; the last is only T1 before Timer B (3.2 s), so a late loop may skip it.
    sent = journal.sent_methods()
    assert set(sent) == {"INVITE"} and len(sent) in (6, 7), sent
    result = peer.wait(15)
    assert result.message_count(0, "INVITE", "Recv") == 1
    assert result.message_count(0, "INVITE", "Retrans") == len(sent) - 1, result.explain()


def test_many_legs_each_removed_exactly_once(sip_peers: SipPeerFactory) -> None:  # noqa: F811
    calls = 30
    peer = sip_peers.start("uas_answer.xml", "udp", calls=calls)
    journal = Journal()

    async def scenario() -> None:
        manager = await started(journal)
        ids = [await manager.dial(request_to(peer)) for _ in range(calls)]
        await eventually(
            lambda: all(manager.is_leg_established(i) for i in ids), "all answers", timeout=10
        )
        for call_id in ids:
            manager.send_bye(call_id)
        await asyncio.gather(*(finished(manager, i) for i in ids))
        await manager.close()
        assert sorted(journal.removed) == sorted(ids)

    run(scenario)
    result = peer.wait(20)
    assert result.successful_calls == calls, result.explain()


def test_network_garbage_is_counted_and_never_leaks_a_leg(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", "udp")
    journal = Journal()

    async def scenario() -> None:
        manager = await started(journal)
        call_id = await manager.dial(request_to(peer))
        await eventually(lambda: manager.is_leg_established(call_id), "the answer")
        ours = manager.local_address
        stray = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK-nobody\r\n"
            b"From: <sip:a@b>;tag=x\r\nTo: <sip:c@d>;tag=y\r\nCall-ID: nobody@nowhere\r\n"
            b"CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for datagram in (b"\x00\x01\x02garbage", b"INVITE nonsense\r\n\r\n", stray):
                attacker.sendto(datagram, ours)
        stats = manager.core.stats
        await eventually(lambda: stats.messages_received >= 4, "the junk to be read")
        await eventually(lambda: stats.parse_errors >= 2, "the parse errors")
        await eventually(lambda: stats.stray_responses >= 1, "the stray response")
        assert manager.live_legs() == [call_id]  # the live leg is untouched
        assert manager.stats.core_errors == 0
        manager.send_bye(call_id)
        await finished(manager, call_id)
        assert manager.live_legs() == []
        await manager.close()

    run(scenario)
    assert peer.wait(10).successful_calls == 1


def test_a_200_with_broken_sdp_is_acked_byed_and_reported(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_bad_sdp.xml", "udp")
    journal = Journal()

    async def scenario() -> None:
        manager = await started(journal)
        call_id = await manager.dial(request_to(peer))
        terminal = await finished(manager, call_id)
        assert terminal.cdr.error
        assert manager.live_legs() == []
        await manager.close()

    run(scenario)
    assert journal.sent_methods() == ["INVITE", "ACK", "BYE"]
    assert len(journal.removed) == 1
    assert peer.wait(10).successful_calls == 1


def test_bad_dial_request_is_refused_and_leaves_no_leg() -> None:
    journal = Journal()

    async def scenario() -> None:
        manager = await started(journal)
        bad = DialRequest(target=DialTarget(request_uri="", signaling_addr="127.0.0.1:5060"))
        with pytest.raises(LocalProtocolError):
            await manager.dial(bad)
        assert manager.live_legs() == []
        await manager.close()

    run(scenario)
    assert journal.sent == [] and journal.removed == []


def test_signaling_service_dials_and_hangs_up_from_other_threads(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", "tcp")
    established = threading.Event()
    removed = threading.Event()
    loop_threads: set[str] = set()

    def on_event(event: LegEvent) -> None:
        loop_threads.add(threading.current_thread().name)
        if event.state == "established":
            established.set()

    service = SignalingService(
        CoreConfig(),
        TransportConfig(),
        ManagerHooks(on_event=on_event, on_leg_removed=lambda call_id: removed.set()),
        thread_name="sip-test-loop",
    )
    service.start()
    try:
        call_id = service.dial_threadsafe(request_to(peer)).result(timeout=5)
        assert re.match(r"\S+@\S+", call_id)
        assert established.wait(10)
        service.hangup_threadsafe(call_id).result(timeout=5)
        assert removed.wait(10)
    finally:
        service.stop(timeout=5)
    assert loop_threads == {"sip-test-loop"}
    assert peer.wait(10).successful_calls == 1


def test_signaling_service_stop_cancels_what_is_ringing(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_ring_cancel.xml", "udp")
    ringing = threading.Event()
    terminal_states: list[str] = []

    def on_event(event: LegEvent) -> None:
        if event.status_code == 180:
            ringing.set()
        if event.terminal:
            terminal_states.append(event.state)

    service = SignalingService(CoreConfig(), TransportConfig(), ManagerHooks(on_event=on_event))
    service.start()
    service.dial_threadsafe(request_to(peer)).result(timeout=5)
    assert ringing.wait(10)
    service.stop(timeout=8)
    assert terminal_states == ["cancelled"]
    assert peer.wait(10).successful_calls == 1


def test_close_while_pre_ack_is_pending_acks_and_byes_the_answer(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", "udp")
    journal = Journal()
    waiting = asyncio.Event()

    async def never_returns(event: AnswerReceived) -> None:
        waiting.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        manager = await started(journal, pre_ack=never_returns)
        call_id = await manager.dial(request_to(peer))
        await asyncio.wait_for(waiting.wait(), 10)
        await manager.close(timeout=10)
        terminal = journal.events[-1]
        assert terminal.terminal and terminal.call_id == call_id
        assert terminal.cdr.error == "signaling shutting down"  # type: ignore[attr-defined]
        assert journal.removed == [call_id]

    run(scenario)
    assert journal.sent_methods() == ["INVITE", "ACK", "BYE"]
    assert peer.wait(10).successful_calls == 1
