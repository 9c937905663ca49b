"""Load benchmark of the UAC: full calls per second and memory per established leg vs SIPp.

    .venv/bin/python bench/uac_load.py --calls 5000 --rate 1000 --json
    .venv/bin/python bench/uac_load.py --established 10000 --rate 1000 --json
    .venv/bin/python bench/uac_load.py --calls 3000 --rate 1000 --profile

Without --proxy a `sipp -sn uas` is started on a free loopback port (and stopped afterwards).
The same N calls at rate R are then placed by SIPp's own UAC (`sipp -sn uac`) against a fresh
`sipp -sn uas` for comparison. Figures go to stdout: with --json one JSON object, our figures
with SIPp's under "sipp_uac" and "cps_ratio_to_sipp" (ours / SIPp's calls per second).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import logging
import pstats
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import DialogEstablished, LegEvent
from sipstack.transport import Transport
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

SIPP = shutil.which("sipp")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    for _ in range(200):
        port = random.randrange(20_000, 60_000)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


@contextmanager
def sipp_uas(transport: str, workdir: Path) -> Iterator[str]:
    """A `sipp -sn uas` on a free loopback port; yields its host:port."""
    if SIPP is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    port = free_port()
    args = [
        SIPP,
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-nostdin",
        "-t",
        "u1" if transport == "udp" else "t1",
        "-max_socket",
        "60000",
        "-buff_size",
        "4194304",  # SIPp's default socket buffers drop datagrams in bursts
        "-trace_err",
        "-error_file",
        str(workdir / f"uas-{port}-errors.log"),
    ]
    out = (workdir / f"uas-{port}.txt").open("wb")
    process = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _listening(port, transport):
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        out.close()


def _listening(port: int, transport: str) -> bool:
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return True
            return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class LoadResult:
    calls: int = 0
    answered: int = 0
    failed: int = 0
    established_peak: int = 0
    first_dial: float = 0.0
    last_end: float = 0.0
    dispositions: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


async def run_load(
    proxy: str,
    calls: int,
    rate: float,
    hold: float,
    transport: Transport,
    keep_established: bool = False,
    report: dict[str, Any] | None = None,
) -> LoadResult:
    """Dial `calls` at `rate`/s; BYE each `hold` s after answer (or keep them with
    keep_established, measure the RSS, then hang all up)."""
    loop = asyncio.get_running_loop()
    result = LoadResult(calls=calls)
    established_now = 0
    all_done = loop.create_future()
    all_established = loop.create_future()
    ended = 0
    manager: LegManager

    def on_event(event: LegEvent) -> None:
        nonlocal established_now, ended
        if isinstance(event, DialogEstablished):
            established_now += 1
            result.established_peak = max(result.established_peak, established_now)
            if keep_established:
                if established_now == calls and not all_established.done():
                    all_established.set_result(None)
            elif hold <= 0:
                manager.send_bye(event.call_id)
            else:
                loop.call_later(hold, _bye, event.call_id)
        elif event.terminal:
            cdr = event.cdr  # type: ignore[attr-defined]
            if cdr.answered_at is not None:
                established_now -= 1
            ok = cdr.answered_at is not None and cdr.error is None
            result.answered += ok
            result.failed += not ok
            key = str(cdr.disposition)
            result.dispositions[key] = result.dispositions.get(key, 0) + 1
            if cdr.error:
                result.errors[cdr.error[:60]] = result.errors.get(cdr.error[:60], 0) + 1
            ended += 1
            result.last_end = time.perf_counter()
            if ended == calls and not all_done.done():
                all_done.set_result(None)

    def _bye(call_id: str) -> None:
        if manager.is_leg_established(call_id):
            manager.send_bye(call_id)

    manager = LegManager(
        CoreConfig(max_legs=max(100_000, calls * 2)),
        TransportConfig(bind_host="127.0.0.1"),
        ManagerHooks(on_event=on_event),
    )
    await manager.start()
    host, _, port = proxy.rpartition(":")
    target = DialTarget(
        request_uri=f"sip:service@{host}:{port}", signaling_addr=proxy, transport=transport
    )
    request = DialRequest(target=target)
    gc.collect()
    rss_before = rss_mb()
    interval = 1.0 / rate
    result.first_dial = start = time.perf_counter()
    for index in range(calls):
        due = start + index * interval
        delay = due - time.perf_counter()
        if delay > 0.001:
            await asyncio.sleep(delay)
        await manager.dial(request)
    if keep_established:
        await asyncio.wait_for(all_established, timeout=60 + calls / rate)
        gc.collect()
        if report is not None:
            report["established"] = established_now
            report["rss_extra_mb"] = round(rss_mb() - rss_before, 1)
            report["kb_per_leg"] = round((rss_mb() - rss_before) * 1024 / max(1, calls), 2)
        teardown = time.perf_counter()
        for index, call_id in enumerate(manager.live_legs()):  # hang up at the same rate
            delay = teardown + index * interval - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            if manager.is_leg_established(call_id):
                manager.send_bye(call_id)
    try:
        await asyncio.wait_for(all_done, timeout=60 + calls / rate + hold)
    except TimeoutError:
        print(f"timed out: {ended}/{calls} legs ended", file=sys.stderr)
    if report is not None:
        gc.collect()
        report["rss_after_all_ended_mb"] = round(rss_mb() - rss_before, 1)
        report["manager_stats"] = {k: v for k, v in manager.all_stats().items() if v}
    await manager.close(timeout=5)
    return result


def run_on_loop(kind: str, coroutine: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    if kind == "uvloop":
        import uvloop  # optional: pip install uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def run_sipp_uac(
    uas: str, calls: int, rate: float, hold: float, transport: str, workdir: Path
) -> dict[str, Any]:
    assert SIPP is not None
    stats = workdir / "sipp-uac.csv"
    port = free_port()
    args = [
        SIPP,
        "-sn",
        "uac",
        uas,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-nostdin",
        "-t",
        "u1" if transport == "udp" else "t1",
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(max(calls, 1)),
        "-d",
        str(int(hold * 1000)),
        "-trace_stat",
        "-stf",
        str(stats),
        "-fd",
        "1",
    ]
    started = time.perf_counter()
    completed = subprocess.run(
        args,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120 + calls / rate,
        check=False,
    )
    elapsed = time.perf_counter() - started
    rows = [r for r in stats.read_text().splitlines() if r.strip()] if stats.exists() else []
    values = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False)) if rows else {}
    successful = int(values.get("SuccessfulCall(C)", 0) or 0)
    failed = int(values.get("FailedCall(C)", 0) or 0)
    return {
        "tool": "sipp -sn uac",
        "calls": calls,
        "answered": successful,
        "failed": failed,
        "exit_code": completed.returncode,
        "cps": round(successful / elapsed, 1) if elapsed else 0.0,
        "wall_s": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proxy", help="host:port of a UAS; default: start sipp -sn uas")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered calls per second")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds between answer and BYE")
    parser.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    parser.add_argument(
        "--established",
        type=int,
        default=0,
        metavar="N",
        help="memory mode: hold N legs established at once, report RSS",
    )
    parser.add_argument("--no-sipp-uac", action="store_true", help="skip the SIPp UAC run")
    parser.add_argument("--profile", action="store_true", help="cProfile our run (to stderr)")
    parser.add_argument("--profile-out", default="uac_load.prof", help="where --profile dumps")
    parser.add_argument(
        "--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop to run on"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    transport = Transport.parse(args.transport)
    calls = args.established or args.calls
    workdir = Path(tempfile.mkdtemp(prefix="uac-load-"))
    report: dict[str, Any] = {}

    def measure(proxy: str) -> LoadResult:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report["_cpu_before"] = (usage.ru_utime, usage.ru_stime)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        try:
            return run_on_loop(
                args.loop,
                run_load(
                    proxy,
                    calls,
                    args.rate,
                    args.hold,
                    transport,
                    keep_established=bool(args.established),
                    report=report,
                ),
            )
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile_out)
                text = io.StringIO()
                stats = pstats.Stats(profiler, stream=text)
                stats.sort_stats("tottime").print_stats(25)
                stats.sort_stats("cumulative").print_stats(40)
                print(text.getvalue(), file=sys.stderr)

    if args.proxy:
        result = measure(args.proxy)
    else:
        with sipp_uas(args.transport, workdir) as proxy:
            result = measure(proxy)
    elapsed = max(1e-9, result.last_end - result.first_dial)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user_before, system_before = report.pop("_cpu_before")
    cpu_user, cpu_system = usage.ru_utime - user_before, usage.ru_stime - system_before
    cpu = cpu_user + cpu_system
    ours = {
        "tool": "outbound LegManager",
        "calls": result.calls,
        "answered": result.answered,
        "failed": result.failed,
        "cps": round(result.answered / elapsed, 1),
        "offered_rate": args.rate,
        "transport": args.transport,
        "hold": args.hold,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cpu_s": round(cpu, 2),
        "cpu_user_s": round(cpu_user, 2),
        "cpu_system_s": round(cpu_system, 2),
        "cpu_ms_per_call": round(cpu * 1000 / max(1, result.calls), 3),
        "dispositions": result.dispositions,
    }
    if result.errors:
        ours["errors"] = result.errors
    ours.update(report)
    if not args.no_sipp_uac and not args.established and SIPP is not None:
        with sipp_uas(args.transport, workdir) as uas:
            theirs = run_sipp_uac(uas, calls, args.rate, args.hold, args.transport, workdir)
        ours["sipp_uac"] = theirs
        ours["cps_ratio_to_sipp"] = round(ours["cps"] / theirs["cps"], 2) if theirs["cps"] else None
    if args.json:
        print(json.dumps(ours))
    else:
        theirs = ours.pop("sipp_uac", None)
        print("  ".join(f"{k}={v}" for k, v in ours.items()))
        if theirs is not None:
            print("sipp_uac:  " + "  ".join(f"{k}={v}" for k, v in theirs.items()))
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
