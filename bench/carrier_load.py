"""Load the carrier simulator with SIPp's built-in UAC and print what it kept up with.

    .venv/bin/python bench/carrier_load.py --rate 1000 --calls 20000 [--transport udp|tcp]

Prints SIPp's successful/failed calls and achieved rate, retransmissions, and the carrier's CPU
seconds per 1,000 calls (from /proc). Every call is INVITE, 100, 180, 200, ACK, BYE, 200.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.sipp.harness import free_ports, wait_until  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def read_stats(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="calls per second SIPp places")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    args = parser.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp is not installed", file=sys.stderr)
        return 1
    carrier_port, sipp_port = free_ports(1), free_ports(1)
    carrier = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "carrier", "--listen",
         f"127.0.0.1:{carrier_port}", "--ring", "0", "--transport", args.transport],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    with tempfile.TemporaryDirectory() as workdir:
        stats_file = Path(workdir) / "stats.csv"
        try:
            wait_until(lambda: _listening(carrier_port, args.transport), 20, "the carrier")
            cpu_before = cpu_seconds(carrier.pid)
            started = time.monotonic()
            result = subprocess.run(
                [sipp, "-sn", "uac", f"127.0.0.1:{carrier_port}", "-i", "127.0.0.1",
                 "-p", str(sipp_port), "-t", "u1" if args.transport == "udp" else "t1",
                 "-r", str(args.rate), "-m", str(args.calls), "-nostdin",
                 "-trace_stat", "-stf", str(stats_file), "-fd", "1"],
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                timeout=60 + 3 * args.calls / args.rate,
            )
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(carrier.pid) - cpu_before
        finally:
            carrier.send_signal(signal.SIGTERM)
            summary, _ = carrier.communicate(timeout=30)
        stats = read_stats(stats_file)
    ok = int(stats.get("SuccessfulCall(C)", "0"))
    failed = int(stats.get("FailedCall(C)", "0"))
    print(f"transport {args.transport}, asked {args.rate} calls/s for {args.calls} calls")
    print(f"sipp exit {result.returncode}: successful {ok}, failed {failed}, "
          f"retransmissions {stats.get('Retransmissions(C)')}")
    print(f"achieved {ok / elapsed:.0f} calls/s over {elapsed:.1f} s "
          f"(sipp's own CallRate(C) {stats.get('CallRate(C)')})")
    print(f"carrier CPU {cpu:.2f} s = {1000 * cpu / max(ok, 1):.3f} s per 1,000 calls "
          f"(one core saturates near {max(ok, 1) / max(cpu, 1e-9):.0f} calls/s)")
    print(summary.strip())
    return 0 if failed == 0 and result.returncode == 0 else 1


def _listening(port: int, transport: str) -> bool:
    import socket

    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


if __name__ == "__main__":
    raise SystemExit(main())
