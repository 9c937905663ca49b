"""DialFeeder on a real signaling loop and a UDP far end: every claimed leg gets its INVITE or
is handed back to be ended, never silently dropped."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.transport import Transport
from tests.workers_harness import wait_for
from workers.runtime.book import LegContext
from workers.runtime.feeder import DialFeeder
from workers.signaling.manager import ManagerHooks, SignalingService
from workers.signaling.transports import TransportConfig


class FarEnd:
    """A UDP socket that only records the Call-IDs of the INVITEs it receives."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])
        self.call_ids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65535)
            except TimeoutError:
                continue
            if data.startswith(b"INVITE "):
                for line in data.split(b"\r\n"):
                    if line.lower().startswith((b"call-id:", b"i:")):
                        self.call_ids.add(line.split(b":", 1)[1].strip().decode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


@pytest.fixture
def far_end() -> Iterator[FarEnd]:
    instance = FarEnd()
    yield instance
    instance.close()


@pytest.fixture
def signaling() -> Iterator[SignalingService]:
    service = SignalingService(
        CoreConfig(local_addresses={Transport.UDP: ("127.0.0.1", 0)}),
        TransportConfig(bind_host="127.0.0.1"), ManagerHooks(),
    )
    service.start()
    yield service
    service.stop(timeout=2.0)


def leg(index: int) -> LegContext:
    return LegContext(leg_id=str(uuid.uuid4()), trunk="t", correlation_id=f"c-{index}",
                      scenario="campaign")


def request(port: int, index: int, uri: str | None = None) -> DialRequest:
    return DialRequest(
        target=DialTarget(request_uri=uri if uri is not None else f"sip:+1555{index}@127.0.0.1",
                          signaling_addr=f"127.0.0.1:{port}", transport=Transport.UDP),
        correlation_id=f"c-{index}", call_id=f"feeder-{index}-{uuid.uuid4().hex[:8]}@test",
    )


def test_a_burst_goes_out_in_slices_and_every_invite_is_sent(
    signaling: SignalingService, far_end: FarEnd
) -> None:
    refused: list[tuple[LegContext, str]] = []
    feeder = DialFeeder(signaling, lambda context, why, _cause: refused.append((context, why)),
                        slice_size=8, max_queued=100)
    requests = [request(far_end.port, index) for index in range(50)]
    feeder.reserve(len(requests))
    for index, dial in enumerate(requests):
        feeder.submit(leg(index), dial)
    wanted = {dial.call_id for dial in requests}
    wait_for(lambda: far_end.call_ids >= wanted, 10, "an INVITE for every submitted dial")
    assert refused == []
    assert feeder.slices >= 50 // 8  # not one loop callback for the whole burst


def test_a_dial_the_loop_refuses_is_handed_back_with_the_reason(
    signaling: SignalingService, far_end: FarEnd
) -> None:
    refused: list[tuple[LegContext, str]] = []
    feeder = DialFeeder(signaling, lambda context, why, _cause: refused.append((context, why)))
    bad, good = leg(1), leg(2)
    feeder.submit(bad, request(far_end.port, 1, uri=""))
    feeder.submit(good, request(far_end.port, 2))
    wait_for(lambda: refused, 5, "the refused dial to come back")
    assert refused[0][0] is bad and refused[0][1].startswith("INVITE not sent:")
    wait_for(lambda: len(far_end.call_ids) == 1, 5, "the good dial's INVITE")


def test_dials_after_the_loop_stopped_are_handed_back(far_end: FarEnd) -> None:
    service = SignalingService(
        CoreConfig(local_addresses={Transport.UDP: ("127.0.0.1", 0)}),
        TransportConfig(bind_host="127.0.0.1"), ManagerHooks(),
    )
    service.start()
    refused: list[str] = []
    feeder = DialFeeder(
        service, lambda context, why, _cause: refused.append(context.correlation_id))
    service.stop(timeout=2.0)
    feeder.submit(leg(1), request(far_end.port, 1))
    feeder.close()
    feeder.submit(leg(2), request(far_end.port, 2))
    assert refused == ["c-1", "c-2"]
    assert far_end.call_ids == set()
