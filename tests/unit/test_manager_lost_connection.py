"""LegManager over real TCP: when the far end drops the connection, a ringing call's CANCEL
reaches it over a new connection (no call is left up at the carrier), and an established call
stays up: the next BYE opens a new connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from sipstack.cdr import Disposition, HangupBy, HangupReason
from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import LegEnded, LegEvent, LegFailed
from sipstack.framing import StreamFramer
from sipstack.message import Request, Response, make_response, parse_message
from sipstack.transport import Transport
from tests.fakes import ANSWER_SDP
from tests.waiting import eventually
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0


@dataclass(eq=False)
class FarConnection:
    """One TCP connection accepted by the far end; what arrives on it is parsed and queued."""

    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    framer: StreamFramer = field(default_factory=StreamFramer)
    queued: list[Request | Response] = field(default_factory=list)

    @property
    def peer_port(self) -> int:
        return int(self.writer.get_extra_info("peername")[1])

    async def receive(self) -> Request:
        while not self.queued:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            assert data, f"connection {self.number} closed while a request was awaited"
            self.queued.extend(parse_message(raw) for raw in self.framer.feed(data))
        message = self.queued.pop(0)
        assert isinstance(message, Request), message
        return message

    def send(self, message: Response) -> None:
        self.writer.write(message.to_bytes())

    async def drop(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@dataclass
class TcpFarEnd:
    """A scripted UAS on a real TCP listener: each connection it accepts is queued in order."""

    accepted: asyncio.Queue[FarConnection] = field(default_factory=asyncio.Queue)
    server: asyncio.Server | None = None
    count: int = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        await self.accepted.put(FarConnection(self.count, reader, writer))

    async def next_connection(self) -> FarConnection:
        return await asyncio.wait_for(self.accepted.get(), WAIT)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


def respond(request: Request, status: int, **headers: str) -> Response:
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    body = b""
    if status == 200 and request.method == "INVITE":
        extra.append(("Content-Type", "application/sdp"))
        body = ANSWER_SDP
    to_tag = None if status == 100 or request.method in ("BYE", "CANCEL") else "far-1"
    return make_response(request, status, to_tag=to_tag, headers=extra, body=body)


Scenario = Callable[[LegManager, TcpFarEnd, int, list[LegEvent]], Awaitable[None]]


def run(scenario: Scenario) -> list[LegEvent]:
    events: list[LegEvent] = []
    removed: list[str] = []

    async def main() -> None:
        far = TcpFarEnd()
        port = await far.start()
        hooks = ManagerHooks(on_event=events.append, on_leg_removed=removed.append)
        manager = LegManager(CoreConfig(), TransportConfig(), hooks)
        await manager.start()
        try:
            await scenario(manager, far, port, events)
        finally:
            await manager.close(timeout=1)
            await far.close()
        assert len(removed) == 1

    asyncio.run(asyncio.wait_for(main(), 25))
    return events


def tcp_request(port: int) -> DialRequest:
    return DialRequest(
        target=DialTarget(
            request_uri=f"sip:service@127.0.0.1:{port};transport=tcp",
            signaling_addr=f"127.0.0.1:{port}",
            transport=Transport.TCP,
        ),
        correlation_id="lost-1",
    )


def test_a_connection_closed_mid_call_leaves_the_call_up_and_our_bye_opens_a_new_one() -> None:
    async def scenario(
        manager: LegManager, far: TcpFarEnd, port: int, events: list[LegEvent]
    ) -> None:
        call_id = await manager.dial(tcp_request(port))
        first = await far.next_connection()
        invite = await first.receive()
        assert invite.method == "INVITE"
        first.send(respond(invite, 180))
        contact = f"<sip:far@127.0.0.1:{port};transport=tcp>"
        first.send(respond(invite, 200, Contact=contact))
        ack = await first.receive()
        assert ack.method == "ACK"
        await first.drop()  # a proxy closes the idle connection mid-call (RFC 3261 §18)
        stats = manager.transports.stats
        await eventually(lambda: stats.connections_lost == 1, "the loss to be seen")
        assert manager.is_leg_established(call_id) and not events[-1].terminal
        assert not manager.transports.has_connection(Transport.TCP, ("127.0.0.1", port))

        manager.send_bye(call_id)
        second = await far.next_connection()
        bye = await second.receive()
        assert bye.method == "BYE" and bye.cseq == (2, "BYE")
        assert second.peer_port != first.peer_port  # a new connection, from a new local port
        second.send(respond(bye, 200))
        terminal = await asyncio.wait_for(manager.leg_finished(call_id), WAIT)
        assert isinstance(terminal, LegEnded)
        assert terminal.cdr.hangup_by is HangupBy.LOCAL
        assert terminal.cdr.hangup_reason is HangupReason.NORMAL
        assert terminal.cdr.disposition is Disposition.ANSWERED
        assert terminal.cdr.error is None
        assert stats.connections_opened == 2

    events = run(scenario)
    assert [e.state for e in events if e.terminal] == ["ended"]


def test_a_far_end_that_drops_the_connection_while_ringing_gets_the_cancel_on_a_new_one() -> None:
    async def scenario(
        manager: LegManager, far: TcpFarEnd, port: int, events: list[LegEvent]
    ) -> None:
        call_id = await manager.dial(tcp_request(port))
        first = await far.next_connection()
        invite = await first.receive()
        first.send(respond(invite, 100))
        first.send(respond(invite, 180))
        await eventually(lambda: any(e.status_code == 180 for e in events), "the 180")
        await first.drop()

        second = await far.next_connection()
        cancel = await second.receive()
        assert cancel.method == "CANCEL" and cancel.via_branch == invite.via_branch
        second.send(respond(cancel, 200))
        second.send(respond(invite, 487))
        terminal = await asyncio.wait_for(manager.leg_finished(call_id), WAIT)
        assert isinstance(terminal, LegFailed)
        assert terminal.cdr.error == (
            "connection lost while ringing; CANCEL sent again, answered 200"
        )
        assert terminal.cdr.hangup_reason is HangupReason.ERROR
        ack = await second.receive()  # the 487 is still ACKed, on the new connection
        assert ack.method == "ACK" and ack.via_branch == invite.via_branch

    events = run(scenario)
    assert [e.state for e in events if e.terminal] == ["failed"]
