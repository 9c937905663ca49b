"""Print (JSON) how fast UacCore runs whole calls against an in-memory UAS, and what 10,000
established legs cost in memory.

Each call: INVITE → 100 → 180 → 200 (SDP) → confirm_answer → ACK → BYE → 200, with a fake
clock; the UAS side parses every request and builds its responses with the message layer.
`core_calls_per_second` counts only the time spent inside UacCore; `calls_per_second` includes
the UAS. Memory is measured with tracemalloc after the INVITE transactions have lingered out
(Timer M), i.e. the steady state of long calls.

Run: .venv/bin/python bench/core_throughput.py [--calls 20000] [--legs 10000] [--batch 500]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from typing import Any

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import AnswerReceived
from sipstack.message import Request, make_response, parse_message
from sipstack.transport import Address, Transport
from sipstack.uac import UacCore

TRUNK: Address = ("192.0.2.10", 5060)
ANSWER_SDP = (
    b"v=0\r\no=uas 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
ANSWER_HEADERS = [
    ("Contact", "<sip:callee@192.0.2.10:5060>"),
    ("Content-Type", "application/sdp"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0


class TimedCore:
    """Runs core methods and adds up the time spent inside them."""

    def __init__(self, core: UacCore) -> None:
        self.core = core
        self.seconds = 0.0

    def __call__(self, method: Any, *args: Any) -> Any:
        started = time.perf_counter()
        result = method(*args)
        self.seconds += time.perf_counter() - started
        return result


def _request(n: int) -> DialRequest:
    return DialRequest(
        target=DialTarget(
            request_uri=f"sip:+1555{n:07d}@carrier.example", signaling_addr="192.0.2.10:5060"
        ),
        correlation_id=f"c{n}",
        trunk="bench",
    )


class Uas:
    """The in-memory far end: answers INVITEs with 100/180/200 and BYEs with 200."""

    def __init__(self) -> None:
        self.invites: dict[str, Request] = {}
        self.tag = 0

    def handle(self, data: bytes) -> list[bytes]:
        message = parse_message(data)
        if not isinstance(message, Request):
            return []
        if message.method == "INVITE":
            self.tag += 1
            tag = f"uas{self.tag}"
            self.invites[message.call_id or ""] = message
            return [
                make_response(message, 100).to_bytes(),
                make_response(message, 180, to_tag=tag).to_bytes(),
                make_response(
                    message, 200, to_tag=tag, headers=ANSWER_HEADERS, body=ANSWER_SDP
                ).to_bytes(),
            ]
        if message.method == "BYE":
            self.invites.pop(message.call_id or "", None)
            return [make_response(message, 200).to_bytes()]
        return []  # ACK


def _exchange(timed: TimedCore, uas: Uas, clock: Clock) -> list[str]:
    """Deliver everything the core sent to the UAS and back; return answered Call-IDs."""
    core = timed.core
    answered: list[str] = []
    while True:
        outgoing = timed(core.outgoing)
        if not outgoing:
            break
        for out in outgoing:
            for reply in uas.handle(out.data):
                timed(core.receive, reply, TRUNK, Transport.UDP, clock.now)
    for event in timed(core.events):
        if isinstance(event, AnswerReceived):
            answered.append(event.call_id)
    return answered


def _establish(timed: TimedCore, uas: Uas, clock: Clock, first: int, count: int) -> list[str]:
    core = timed.core
    for n in range(first, first + count):
        timed(core.dial, _request(n), clock.now)
    answered = _exchange(timed, uas, clock)
    for call_id in answered:
        timed(core.confirm_answer, call_id, clock.now)
    _exchange(timed, uas, clock)
    return answered


def throughput(calls: int, batch: int) -> dict[str, float]:
    clock = Clock()
    core = UacCore(CoreConfig())
    timed = TimedCore(core)
    uas = Uas()
    started = time.perf_counter()
    done = 0
    while done < calls:
        count = min(batch, calls - done)
        answered = _establish(timed, uas, clock, done, count)
        clock.now += 1.0
        for call_id in answered:
            timed(core.bye, call_id, clock.now)
        _exchange(timed, uas, clock)
        clock.now += 1.0
        timed(core.handle_timer, clock.now)
        done += count
    wall = time.perf_counter() - started
    return {
        "calls": calls,
        "calls_per_second": round(calls / wall),
        "core_calls_per_second": round(calls / timed.seconds),
        "core_seconds": round(timed.seconds, 3),
        "wall_seconds": round(wall, 3),
        "legs_left": core.leg_count,
        "terminal_events_ok": core.stats.legs_ended == calls,
    }


def memory(legs: int, batch: int) -> dict[str, float]:
    clock = Clock()
    core = UacCore(CoreConfig())
    timed = TimedCore(core)
    uas = Uas()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    done = 0
    while done < legs:
        count = min(batch, legs - done)
        _establish(timed, uas, clock, done, count)
        done += count
    uas.invites.clear()  # the far end's copies are not the core's memory
    clock.now += 40.0  # past Timer M: the INVITE transactions have lingered out
    core.handle_timer(clock.now)
    core.outgoing()
    core.events()
    gc.collect()
    after = tracemalloc.take_snapshot()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {
        "established_legs": core.leg_count,
        "bytes_total": used,
        "megabytes_total": round(used / 1e6, 1),
        "bytes_per_leg": round(used / max(1, core.leg_count)),
        "tracemalloc_peak_megabytes": round(peak / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--legs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    options = parser.parse_args()
    report = {
        "throughput": throughput(options.calls, options.batch),
        "memory": memory(options.legs, options.batch),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
