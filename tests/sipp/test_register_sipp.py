"""REGISTER client against SIPp as a real registrar over UDP on loopback: 401 digest, a 2 s
grant refreshed after 1 s with valid credentials (nc=2), then unbinding with Expires: 0."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

from sipstack.auth import parse_authorization
from sipstack.dial import Credentials
from sipstack.message import Request, parse_message
from sipstack.register import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationEvent,
    RegistrationFailed,
    RegState,
    Unregistered,
)
from tests.sipp.harness import LOOPBACK, Sipp, free_ports, requires_sipp


class UdpShell:
    """The smallest asyncio-free shell: one UDP socket, the registration's one timer."""

    def __init__(self, reg: Registration, sock: socket.socket) -> None:
        self.reg = reg
        self.sock = sock
        self.sent: list[Request] = []
        self.events: list[RegistrationEvent] = []

    def run_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self._flush()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what}: not reached in {timeout} s; events {self.events}")
            due = self.reg.next_deadline()
            wait = 0.2 if due is None else max(0.0, min(0.2, due - time.time()))
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable:
                data, source = self.sock.recvfrom(65535)
                self.reg.receive(data, (source[0], source[1]), time.time())
            self.reg.handle_timer(time.time())
            self.events += self.reg.events()
        self._flush()

    def _flush(self) -> None:
        for out in self.reg.outgoing():
            self.sock.sendto(out.data, out.address)
            message = parse_message(out.data)
            assert isinstance(message, Request)
            self.sent.append(message)


@requires_sipp
def test_register_against_a_sipp_registrar(tmp_path: Path) -> None:
    sipp_port = free_ports()
    sipp = Sipp(scenario="uas_registrar.xml", port=sipp_port, transport="udp", workdir=tmp_path)
    sipp.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
        reg = Registration(
            RegistrationConfig(
                registrar=f"sip:{LOOPBACK}:{sipp_port}",
                aor=f"sip:trunk1@{LOOPBACK}",
                contact=f"sip:trunk1@{LOOPBACK}:{port}",
                address=(LOOPBACK, sipp_port),
                via_sent_by=f"{LOOPBACK}:{port}",
                credentials=Credentials(username="trunk1", password="s3cret"),
                expires=300,
            )
        )
        shell = UdpShell(reg, sock)
        reg.start(time.time())

        def registered(count: int) -> Callable[[], bool]:
            return lambda: sum(isinstance(e, Registered) for e in shell.events) >= count

        shell.run_until(registered(1), 10, "first registration")
        first = next(e for e in shell.events if isinstance(e, Registered))
        assert first.expires == 2 and first.refresh_at - first.at == 1.0
        shell.run_until(registered(2), 10, "refresh")
        second = [e for e in shell.events if isinstance(e, Registered)][1]
        assert second.expires == 60
        assert second.at - first.at >= 1.0  # refreshed when due, not before
        assert reg.state is RegState.REGISTERED
        reg.stop(time.time())
        shell.run_until(lambda: reg.state is RegState.STOPPED, 10, "unregistration")
        result = sipp.wait(10)
    finally:
        sock.close()
        sipp.stop()
    assert result.exit_code == 0, result.explain()
    assert result.successful_calls == 1
    assert not any(isinstance(e, RegistrationFailed) for e in shell.events), shell.events
    assert isinstance(shell.events[-1], Unregistered) and shell.events[-1].status == 200
    expires = [m.header("Expires") for m in shell.sent]
    assert expires == ["300", "300", "300", "0"]
    nc = [parse_authorization(m.header("Authorization") or "").nc for m in shell.sent[1:3]]
    assert nc == [1, 2]
    assert len({m.call_id for m in shell.sent}) == 1
