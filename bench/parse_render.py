"""Parse and render throughput of sipstack.message for a typical 200 OK with SDP and INVITE.

Compares with the pure-Python `sipmessage` package parsing the same bytes when it is installed
(benchmark only: `.venv/bin/pip install sipmessage`; it is not a project dependency).

    .venv/bin/python bench/parse_render.py [--repeat 25] [--timer cpu|wall] [--json-only]

Each figure is the best of --repeat timeit runs, the cases interleaved so that load from
other processes falls on all of them alike. The default timer is the process's CPU time,
which a busy shared machine disturbs less than wall time. Prints JSON, then a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipstack.message import Request, parse_message

try:
    import sipmessage
except ImportError:  # a benchmark-only dependency
    sipmessage = None  # type: ignore[assignment]

SDP_OFFER = (
    b"v=0\r\n"
    b"o=outbound 3899218611 3899218611 IN IP4 192.0.2.10\r\n"
    b"s=outbound\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8 0 9 111 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:111 opus/48000/2\r\n"
    b"a=fmtp:111 minptime=10;useinbandfec=1\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
SDP_ANSWER = (
    b"v=0\r\n"
    b"o=CarrierSBC 1716 1717 IN IP4 198.51.100.7\r\n"
    b"s=SBC\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 31234 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE_URI = "sip:+15559870000@carrier.example.net;user=phone"
INVITE_HEADERS = [
    ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK5f3a9c1e2d7b4a60;rport"),
    ("Max-Forwards", "70"),
    ("From", '"Acme Campaigns" <sip:+15551230000@trunk.example.com>;tag=a73kszlfl3'),
    ("To", "<sip:+15559870000@carrier.example.net;user=phone>"),
    ("Call-ID", "7c0b2e4f9a1d4c33b1e8d5a6f2c9e710@192.0.2.10"),
    ("CSeq", "1 INVITE"),
    ("Contact", "<sip:outbound@192.0.2.10:5060;transport=udp>"),
    ("P-Asserted-Identity", "<sip:+15551230000@trunk.example.com>"),
    ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"),
    ("Supported", "timer, replaces"),
    ("Session-Expires", "1800;refresher=uac"),
    ("Min-SE", "90"),
    ("User-Agent", "outbound/0.1"),
    ("Content-Type", "application/sdp"),
]
INVITE_BYTES = Request("INVITE", INVITE_URI, list(INVITE_HEADERS), SDP_OFFER).to_bytes()

OK_200_BYTES = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK5f3a9c1e2d7b4a60;rport=5060;"
    b"received=192.0.2.10\r\n"
    b"Record-Route: <sip:198.51.100.2;lr;ftag=a73kszlfl3>\r\n"
    b'From: "Acme Campaigns" <sip:+15551230000@trunk.example.com>;tag=a73kszlfl3\r\n'
    b"To: <sip:+15559870000@carrier.example.net;user=phone>;tag=as4d7e0c21\r\n"
    b"Call-ID: 7c0b2e4f9a1d4c33b1e8d5a6f2c9e710@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+15559870000@198.51.100.7:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"
    b"Supported: timer, replaces\r\n"
    b"Require: timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Server: CarrierSBC/4.2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP_ANSWER)).encode() + b"\r\n\r\n" + SDP_ANSWER
)


def ours_parse(data: bytes) -> Callable[[], object]:
    def run() -> object:
        return parse_message(data)

    return run


def ours_parse_and_read(data: bytes) -> Callable[[], object]:
    def run() -> object:
        message = parse_message(data)
        return (message.via_branch, message.cseq, message.call_id, message.from_tag, message.to_tag)

    return run


def ours_render(message: Request) -> Callable[[], object]:
    return message.to_bytes


def ours_build_and_render() -> object:
    return Request("INVITE", INVITE_URI, list(INVITE_HEADERS), SDP_OFFER).to_bytes()


def sipmessage_parse(data: bytes) -> Callable[[], object]:
    parse = sipmessage.Message.parse

    def run() -> object:
        return parse(data)

    return run


def sipmessage_parse_and_read(data: bytes) -> Callable[[], object]:
    parse = sipmessage.Message.parse

    def run() -> object:
        message = parse(data)
        return (
            message.via[0].parameters.get("branch"),
            message.cseq,
            message.call_id,
            message.from_address.parameters.get("tag"),
            message.to_address.parameters.get("tag"),
        )

    return run


def cases() -> dict[str, Callable[[], object]]:
    found: dict[str, Callable[[], object]] = {
        "ours.parse_200_ok": ours_parse(OK_200_BYTES),
        "ours.parse_200_ok+read": ours_parse_and_read(OK_200_BYTES),
        "ours.parse_invite": ours_parse(INVITE_BYTES),
        "ours.parse_invite+read": ours_parse_and_read(INVITE_BYTES),
        "ours.render_invite": ours_render(Request("INVITE", INVITE_URI, INVITE_HEADERS, SDP_OFFER)),
        "ours.build+render_invite": ours_build_and_render,
        "ours.render_200_ok": ours_render(parse_message(OK_200_BYTES)),  # type: ignore[arg-type]
    }
    if sipmessage is not None:
        found.update(
            {
                "sipmessage.parse_200_ok": sipmessage_parse(OK_200_BYTES),
                "sipmessage.parse_200_ok+read": sipmessage_parse_and_read(OK_200_BYTES),
                "sipmessage.parse_invite": sipmessage_parse(INVITE_BYTES),
                "sipmessage.parse_invite+read": sipmessage_parse_and_read(INVITE_BYTES),
            }
        )
    return found


def measure(
    runs: dict[str, Callable[[], object]], repeat: int, timer: Callable[[], float]
) -> dict[str, float]:
    """Best microseconds per call of each case over `repeat` interleaved timeit rounds."""
    timers = {name: timeit.Timer(run, timer=timer) for name, run in runs.items()}
    numbers = {}
    for name, timing in timers.items():
        number, _ = timing.autorange()  # enough calls for >= 0.2 s
        numbers[name] = max(1, number // 4)
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):
        for name, timing in timers.items():
            seconds = timing.timeit(numbers[name]) / numbers[name]
            best[name] = min(best[name], seconds * 1e6)
    return best


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
    }


def goals(best: dict[str, float]) -> dict[str, Any]:
    render = best["ours.render_invite"]
    result: dict[str, Any] = {
        "render_invite_under_15_us": render < 15.0,
        "render_invite_us": round(render, 2),
    }
    for message in ("200_ok", "invite"):
        theirs = best.get(f"sipmessage.parse_{message}")
        if theirs is None:
            continue
        ours = best[f"ours.parse_{message}+read"]
        result[f"parse+read_{message}_vs_sipmessage_parse"] = round(ours / theirs, 3)
        result[f"parse+read_{message}_at_least_as_fast"] = ours <= theirs
    return result


def table(best: dict[str, float]) -> str:
    rows = [f"{'case':<32} {'us/op':>9} {'ops/s':>11}  {'vs sipmessage parse':>20}"]
    for name, micro in best.items():
        message = "200_ok" if "200_ok" in name else "invite"
        theirs = best.get(f"sipmessage.parse_{message}")
        ratio = f"{micro / theirs:.2f}x" if theirs and "parse" in name else ""
        rows.append(f"{name:<32} {micro:>9.2f} {1e6 / micro:>11,.0f}  {ratio:>20}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25, help="timeit rounds (best is kept)")
    parser.add_argument("--timer", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    timer = time.process_time if args.timer == "cpu" else time.perf_counter
    if sipmessage is None:
        print(
            "note: sipmessage is not installed, so there is no comparison; install it for the "
            "benchmark only with `.venv/bin/pip install sipmessage`",
            file=sys.stderr,
        )
    best = measure(cases(), args.repeat, timer)
    report = {
        "machine": machine(),
        "timer": "process_time" if args.timer == "cpu" else "perf_counter",
        "repeat": args.repeat,
        "sipmessage": getattr(sipmessage, "__version__", None),
        "message_bytes": {"200_ok": len(OK_200_BYTES), "invite": len(INVITE_BYTES)},
        "us_per_op": {name: round(micro, 3) for name, micro in best.items()},
        "ops_per_s": {name: round(1e6 / micro) for name, micro in best.items()},
        "goals": goals(best),
    }
    print(json.dumps(report, indent=2))
    if not args.json_only:
        print()
        print(table(best))


if __name__ == "__main__":
    main()
