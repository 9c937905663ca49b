"""Support for the carrier tests: a scripted caller driving a CarrierCore on a fake clock,
and `outbound carrier` as a subprocess."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from carrier.core import CarrierCore
from sipstack.message import Request, Response, make_response, parse_message
from sipstack.transport import Address, Transport
from tests.clock import FakeClock
from tests.sipp.harness import free_ports
from tests.waiting import wait_until

__all__ = ["CALLER", "OFFER", "Caller", "CarrierProcess", "Dialog", "FakeClock", "only_request",
           "only_response", "statuses"]

REPO = Path(__file__).resolve().parent.parent
CALLER: Address = ("127.0.0.1", 5062)

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)

_counter = itertools.count(1)


@dataclass
class Dialog:
    """The caller's side of one call."""

    call_id: str
    from_tag: str
    invite: Request = field(default_factory=lambda: Request("INVITE", "sip:unset@invalid", []))
    to_tag: str | None = None
    cseq: int = 1
    transport: Transport = Transport.UDP
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


class Caller:
    """Feeds requests into a core and collects the parsed messages it sends."""

    def __init__(
        self, core: CarrierCore, clock: FakeClock, transport: Transport = Transport.UDP
    ) -> None:
        self.core = core
        self.clock = clock
        self.transport = transport

    def _request(
        self,
        method: str,
        dialog: Dialog,
        cseq: int,
        *,
        branch: str | None = None,
        with_to_tag: bool = True,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Request:
        branch = branch or f"z9hG4bKtest{next(_counter)}"
        to = "<sip:+15551234567@carrier.test>"
        if with_to_tag and dialog.to_tag:
            to += f";tag={dialog.to_tag}"
        token = self.transport.via_token
        hdrs = [
            ("Via", f"{token} {CALLER[0]}:{CALLER[1]};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:outbound@127.0.0.1>;tag={dialog.from_tag}"),
            ("To", to),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:outbound@{CALLER[0]}:{CALLER[1]}>"),
        ]
        hdrs.extend(headers or [])
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        return Request(method, "sip:+15551234567@carrier.test", hdrs, body)

    def send(self, request: Request | Response | bytes) -> list[Request | Response]:
        data = request if isinstance(request, bytes) else request.to_bytes()
        self.core.receive(data, CALLER, self.transport, self.clock.now)
        return self.drain()

    def drain(self) -> list[Request | Response]:
        messages: list[Request | Response] = []
        for out in self.core.outgoing():
            assert out.address == CALLER
            assert out.transport is self.transport
            messages.append(parse_message(out.data))
        return messages

    def advance(self, seconds: float) -> list[Request | Response]:
        self.clock.advance(seconds)
        self.core.handle_timer(self.clock.now)
        return self.drain()

    def run_until(self, until: float) -> list[Request | Response]:
        """Fire every deadline up to `until` (absolute), in order, collecting what is sent."""
        sent: list[Request | Response] = []
        while (deadline := self.core.next_deadline()) is not None and deadline <= until:
            self.clock.now = max(self.clock.now, deadline)
            self.core.handle_timer(self.clock.now)
            sent.extend(self.drain())
        self.clock.now = max(self.clock.now, until)
        return sent

    def invite(
        self,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = OFFER,
    ) -> tuple[Dialog, list[Request | Response]]:
        number = next(_counter)
        dialog = Dialog(call_id=f"call{number}@test", from_tag=f"ft{number}")
        dialog.invite = self._request("INVITE", dialog, 1, headers=headers, body=body)
        dialog.extra_headers = headers or []
        return dialog, self.send(dialog.invite)

    def reinvite_invite(self, dialog: Dialog, *, headers: list[tuple[str, str]]) -> Request:
        """The same call's INVITE again with a new branch and CSeq (a digest retry)."""
        dialog.cseq += 1
        dialog.invite = self._request(
            "INVITE", dialog, dialog.cseq, with_to_tag=False, headers=headers, body=OFFER
        )
        return dialog.invite

    def ack(self, dialog: Dialog, response: Response) -> list[Request | Response]:
        """ACK a final response: same branch for non-2xx, a new one for 2xx (RFC 3261 §17.1.1.3)."""
        tag = response.to_tag
        if response.status_code >= 300:
            assert tag is not None
            dialog_tag, dialog.to_tag = dialog.to_tag, tag
            ack = self._request("ACK", dialog, dialog.invite.cseq[0],
                                branch=dialog.invite.via_branch)
            dialog.to_tag = dialog_tag
        else:
            dialog.to_tag = tag
            ack = self._request("ACK", dialog, dialog.invite.cseq[0])
        return self.send(ack)

    def in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Request:
        dialog.cseq += 1
        return self._request(method, dialog, dialog.cseq, headers=headers, body=body)

    def cancel(self, dialog: Dialog) -> Request:
        return self._request(
            "CANCEL", dialog, dialog.invite.cseq[0], branch=dialog.invite.via_branch,
            with_to_tag=False,
        )

    def respond(self, request: Request, status: int) -> list[Request | Response]:
        return self.send(make_response(request, status))


def statuses(messages: Sequence[Request | Response]) -> list[int]:
    return [m.status_code for m in messages if isinstance(m, Response)]


def only_response(messages: Sequence[Request | Response], status: int) -> Response:
    found = [m for m in messages if isinstance(m, Response) and m.status_code == status]
    assert len(found) == 1, f"expected one {status}, got {statuses(messages)}"
    return found[0]


def only_request(messages: Sequence[Request | Response], method: str) -> Request:
    found = [m for m in messages if isinstance(m, Request) and m.method == method]
    assert len(found) == 1, f"expected one {method}, got {messages}"
    return found[0]


class CarrierProcess:
    """`outbound carrier` as a subprocess on a free loopback port; `stop()` returns its summary."""

    def __init__(self, *flags: str, port: int | None = None) -> None:
        self.port = port if port is not None else free_ports(1)
        self.flags = flags
        self.process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._listening = threading.Event()

    def start(self, timeout: float = 20.0) -> CarrierProcess:
        command = [sys.executable, "-m", "cli.main", "carrier",
                   "--listen", f"127.0.0.1:{self.port}", "--log-format", "json", *self.flags]
        process = self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        )
        assert process.stderr is not None
        threading.Thread(target=self._read_log, args=(process.stderr,), daemon=True).start()
        try:
            wait_until(lambda: self._listening.is_set() or process.poll() is not None,
                       timeout, f"the carrier to listen on port {self.port}")
        finally:
            if not self._listening.is_set():  # it exited, or the wait timed out
                self.kill()
        if not self._listening.is_set():
            raise RuntimeError(f"carrier did not start: {''.join(self.log_lines)[-3000:]}")
        return self

    def _read_log(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.log_lines.append(line)
            try:
                announced = json.loads(line).get("listen_port") == self.port
            except (ValueError, AttributeError):
                continue  # not a JSON log record (a warning printed by a library)
            if announced:
                self._listening.set()

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """SIGTERM, then the calls-by-outcome summary it prints as it exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"carrier exit {self.process.returncode}: {out}"
        summary = {m[1]: int(m[2]) for m in re.finditer(r"(?m)^\s+(\w+)\s+(\d+)$", out)}
        assert "calls" in summary, f"no summary in carrier output: {out!r}"
        return summary

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
