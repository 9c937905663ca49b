"""Test doubles for the UAC core: a fake clock, a harness that records the wire, a far-end UAS.

Everything here is built from the real message layer (parse_message, make_response), so the
far end sees exactly the bytes the core produced and answers with real SIP bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sipstack.config import CoreConfig, TimerConfig
from sipstack.core_output import Outgoing
from sipstack.dial import Credentials, DialRequest, DialTarget
from sipstack.events import CoreEvent, LegCancelled, LegEnded, LegFailed
from sipstack.message import Request, Response, make_response, parse_message
from sipstack.transport import Address, Transport
from sipstack.uac import UacCore

LOCAL: Address = ("192.0.2.1", 5060)
TRUNK: Address = ("192.0.2.10", 5060)
START = 1_700_000_000.0

ANSWER_SDP = (
    b"v=0\r\n"
    b"o=uas 1 1 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 20000 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

TERMINAL = (LegFailed, LegCancelled, LegEnded)


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def core_config(**overrides: Any) -> CoreConfig:
    values: dict[str, Any] = {
        "local_addresses": {
            Transport.UDP: LOCAL, Transport.TCP: ("192.0.2.1", 5060),
            Transport.TLS: ("192.0.2.1", 5061),  # a TLS listener: TLS dials need one
        },
        "timers": TimerConfig(),
    }
    values.update(overrides)
    return CoreConfig(**values)


def dial_request(
    *,
    request_uri: str = "sip:+15551234567@carrier.example",
    signaling_addr: str = "192.0.2.10:5060",
    transport: Transport | None = None,
    **overrides: Any,
) -> DialRequest:
    values: dict[str, Any] = {
        "target": DialTarget(
            request_uri=request_uri, signaling_addr=signaling_addr, transport=transport
        ),
        "correlation_id": "corr-1",
        "trunk": "trunk-a",
    }
    values.update(overrides)
    return DialRequest(**values)


CREDENTIALS = Credentials(username="alice", password="secret")


@dataclass
class Sent:
    """One thing the core put on the wire, parsed back."""

    message: Request | Response
    out: Outgoing
    at: float

    @property
    def request(self) -> Request:
        assert isinstance(self.message, Request), self.message
        return self.message


@dataclass
class Harness:
    """A UacCore driven by a fake clock; everything it sends is parsed and recorded."""

    config: CoreConfig = field(default_factory=core_config)
    seed: int = 7
    clock: FakeClock = field(default_factory=FakeClock)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.core = UacCore(self.config, random_bytes=rng.randbytes)
        self.wire: list[Sent] = []
        self.all_events: list[CoreEvent] = []
        self._event_cursor = 0

    @property
    def now(self) -> float:
        return self.clock.now

    # -- driving ------------------------------------------------------------------------------

    def flush(self) -> list[Sent]:
        fresh = [Sent(parse_message(out.data), out, self.clock.now) for out in self.core.outgoing()]
        self.wire.extend(fresh)
        self.all_events.extend(self.core.events())
        return fresh

    def dial(self, request: DialRequest | None = None, /, **overrides: Any) -> str:
        call_id = self.core.dial(request or dial_request(**overrides), self.clock.now)
        self.flush()
        return call_id

    def deliver(
        self,
        message: Request | Response | bytes,
        source: Address = TRUNK,
        transport: Transport = Transport.UDP,
    ) -> list[Sent]:
        data = message if isinstance(message, bytes) else message.to_bytes()
        self.core.receive(data, source, transport, self.clock.now)
        return self.flush()

    def advance(self, seconds: float) -> list[Sent]:
        """Move the clock forward, firing every deadline on its exact time."""
        target = self.clock.now + seconds
        fresh: list[Sent] = self.flush()
        while (deadline := self.core.next_deadline()) is not None and deadline <= target:
            self.clock.now = max(self.clock.now, deadline)
            self.core.handle_timer(self.clock.now)
            fresh.extend(self.flush())
        self.clock.now = target
        return fresh

    def run_out(self, limit: float = 3600.0) -> list[Sent]:
        """Fire every deadline there is (up to `limit` seconds ahead)."""
        fresh: list[Sent] = []
        end = self.clock.now + limit
        while (deadline := self.core.next_deadline()) is not None and deadline <= end:
            fresh.extend(self.advance(deadline - self.clock.now))
        return fresh

    # -- looking at what happened -------------------------------------------------------------

    def sent_requests(self, method: str) -> list[Sent]:
        return [
            s for s in self.wire if isinstance(s.message, Request) and s.message.method == method
        ]

    def last(self, method: str) -> Request:
        found = self.sent_requests(method)
        assert found, f"no {method} was sent; wire: {[describe(s) for s in self.wire]}"
        return found[-1].request

    def sent_responses(self) -> list[Response]:
        return [s.message for s in self.wire if isinstance(s.message, Response)]

    def new_events(self) -> list[CoreEvent]:
        fresh = self.all_events[self._event_cursor :]
        self._event_cursor = len(self.all_events)
        return fresh

    def events_of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.all_events if isinstance(e, kind)]

    def terminal(self, call_id: str | None = None) -> Any:
        found = [
            e
            for e in self.all_events
            if isinstance(e, TERMINAL) and (call_id is None or e.call_id == call_id)
        ]
        assert len(found) == 1, f"expected one terminal event, got {found}"
        return found[0]


def describe(sent: Sent) -> str:
    message = sent.message
    if isinstance(message, Request):
        return f"{message.method} {message.cseq[0]}"
    return f"{message.status_code} {message.cseq[1]}"


@dataclass
class FarEnd:
    """The callee side, answering with real SIP built from the requests the core sent."""

    tag: str = "uas-7"
    contact: str = "<sip:callee@192.0.2.10:5060>"
    record_route: tuple[str, ...] = ()
    cseq: int = 100

    def respond(
        self,
        request: Request,
        status: int,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        tag: str | None = None,
        call_id: str | None = None,
    ) -> Response:
        to_tag = None if status == 100 else (tag or self.tag)
        extra = list(headers)
        if body:
            extra.append(("Content-Type", "application/sdp"))
        response = make_response(request, status, reason, to_tag=to_tag, headers=extra, body=body)
        if call_id is not None:
            response.set_header("Call-ID", call_id)
        return response

    def answer(
        self,
        invite: Request,
        *,
        body: bytes = ANSWER_SDP,
        headers: Iterable[tuple[str, str]] = (),
        tag: str | None = None,
        call_id: str | None = None,
    ) -> Response:
        """A 200 to the INVITE with Contact, Record-Route and the SDP answer."""
        extra = [("Contact", self.contact)]
        extra.extend(("Record-Route", route) for route in self.record_route)
        extra.extend(headers)
        return self.respond(invite, 200, headers=extra, body=body, tag=tag, call_id=call_id)

    def request(
        self,
        method: str,
        invite: Request,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        call_id: str | None = None,
        branch: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        """An in-dialog request from the callee to us (From/To swapped, our Contact as URI)."""
        self.cseq = cseq if cseq is not None else self.cseq + 1
        our_from = invite.header("from") or ""
        our_to = (invite.header("to") or "") + f";tag={self.tag}"
        contact = invite.header("contact") or "<sip:caller@192.0.2.1>"
        uri = contact.strip("<>")
        all_headers = [
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch or f'z9hG4bKfar{self.cseq}'}"),
            ("Max-Forwards", "70"),
            ("From", our_to),
            ("To", our_from),
            ("Call-ID", call_id or invite.call_id or ""),
            ("CSeq", f"{self.cseq} {method}"),
            *headers,
        ]
        return Request(method, uri, all_headers, body)


def establish(h: Harness, far: FarEnd, **dial_overrides: Any) -> tuple[str, Request]:
    """Dial, ring, answer and confirm: (call_id, the INVITE) of an established leg."""
    call_id = h.dial(**dial_overrides)
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180))
    h.deliver(far.answer(invite))
    assert h.core.confirm_answer(call_id, h.now)
    h.flush()
    return call_id, invite
