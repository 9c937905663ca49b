"""End-to-end throughput of one worker: queue -> INVITE -> call -> committed CDR and events.

    .venv/bin/python -m bench.e2e_throughput --calls 3000
    .venv/bin/python -m bench.e2e_throughput --calls 3000 --broker rabbitmq

`--broker rabbitmq` puts the dial queue on the local RabbitMQ (127.0.0.1:5672, guest; a vhost
of the run's own, created and deleted with rabbitmqctl) instead of the run's Redis. Unless
`--uac-calls 0`, `bench/uac_load.py` runs first (same machine, same moment) and its UAC-only
calls/s is printed beside the end-to-end figure.

Starts its own Redis (broker and streams), a fresh database on the local PostgreSQL, SIPp as a
carrier that answers and hangs up at once, and one `outbound worker` process. All dials are
queued first; the clock runs from the worker's first claim to the last CDR, and the run
checks there was no loss: one CDR per correlation_id, every leg's events complete on the
stream, nothing left in the outbox. Prints the figure and where the time goes: the worker's
CPU per call (counted from its first claim, so start-up is left out) and, with `--profile`,
a py-spy profile of the worker over the run summarised by thread and library
(bench.profile_summary).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.profile_summary import render, summarise
from migrations import runner
from tests.db_fixtures import temporary_database
from tests.rabbitmq import RabbitVhost
from tests.sipp.harness import LOOPBACK, Sipp, free_ports
from tests.worker_stack import events_by_leg
from tests.workers_harness import PYTHON, RedisServer, WorkerProcess, wait_for
from workers.client import DialClient
from workers.config.settings import Settings
from workers.events.stream import EventReader, StreamEvent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    pick = [ordered[min(len(ordered) - 1, int(len(ordered) * q))] for q in (0.5, 0.9, 0.99)]
    return " / ".join(f"{v * 1000:.1f}" for v in pick) + " ms (p50/p90/p99)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8, help="worker dial threads")
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="queue with enqueue_dials, N legs per dial_batch message "
                             "(default 0: one enqueue_dial and one message per call)")
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis")
    parser.add_argument("--uac-calls", type=int, default=5000,
                        help="calls of the UAC-only run first (0: skip it)")
    parser.add_argument("--uac-rate", type=float, default=1000.0,
                        help="offered rate of the UAC-only run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/outbound-bench"))
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="record the worker with py-spy (raw format) into FILE")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    calls = args.calls
    uac = _uac_only(args.uac_calls, args.uac_rate) if args.uac_calls > 0 else None
    load_before = os.getloadavg()

    redis_server = RedisServer().start()
    vhost = RabbitVhost(f"outbound-bench-{uuid.uuid4().hex[:8]}").start() \
        if args.broker == "rabbitmq" else None
    broker_url = vhost.url if vhost is not None else redis_server.url
    sipp_port = free_ports(1)
    sipp = Sipp(
        "uas_answer_remote_bye.xml", sipp_port, "udp", args.work / "sipp", calls,
        {"adv_host": LOOPBACK, "adv_port": str(sipp_port), "adv_transport": "udp",
         "reason_cause": "16"},
        ("-d", "0", "-max_recv_loops", "10000"),
    ).start()
    worker: WorkerProcess | None = None
    try:
        with temporary_database("outbound_bench") as url:
            runner.upgrade(url)
            database_url = url.render_as_string(hide_password=False)
            trunks = args.work / "trunks.toml"
            trunks.write_text(
                f'[trunks.bench]\nproxy = "{LOOPBACK}:{sipp_port}"\ncps = 100000\n'
                "max_concurrent = 100000\nring_timeout = 30\n"
            )
            settings = Settings(database_url=database_url, redis_url=redis_server.url,
                                broker_url=broker_url, trunks_file=str(trunks))
            client = DialClient(settings)

            started = time.perf_counter()

            def enqueue(index: int) -> str:
                return client.enqueue_dial(
                    "bench", f"sip:+1555{index:07d}@{LOOPBACK}:{sipp_port}",
                    correlation_id=f"bench-{index}-{uuid.uuid4().hex[:6]}",
                ).leg_id

            if args.batch > 0:
                dials = [{"to": f"sip:+1555{index:07d}@{LOOPBACK}:{sipp_port}",
                          "correlation_id": f"bench-{index}-{uuid.uuid4().hex[:6]}"}
                         for index in range(calls)]
                chunks = [dials[i:i + args.batch * 10] for i in range(0, calls, args.batch * 10)]
                with ThreadPoolExecutor(4) as pool:
                    leg_ids = [q.leg_id for queued in pool.map(
                        lambda chunk: client.enqueue_dials("bench", chunk,
                                                           chunk_size=args.batch), chunks)
                        for q in queued]
            else:
                with ThreadPoolExecutor(8) as pool:
                    leg_ids = list(pool.map(enqueue, range(calls)))
            enqueue_seconds = time.perf_counter() - started

            worker = WorkerProcess(
                trunk="bench", trunks_file=trunks, name="bench@local",
                env={"OUTBOUND_DATABASE_URL": database_url,
                     "OUTBOUND_REDIS_URL": redis_server.url,
                     "OUTBOUND_BROKER_URL": broker_url},
                log_dir=args.work, concurrency=args.concurrency,
                extra_args=("--prefetch", str(args.prefetch), "--loglevel", "WARNING"),
            ).start()
            engine = client.repository.engine

            def anything_claimed() -> bool:
                with engine.connect() as connection:
                    return connection.execute(text(
                        "SELECT 1 FROM legs WHERE state <> 'queued' LIMIT 1")).first() is not None

            def server_pids() -> list[int]:
                # PostgreSQL backends serving the bench database, and the bench's Redis
                with engine.connect() as connection:
                    backends = connection.execute(text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()")).scalars().all()
                return [int(pid) for pid in backends]

            # The worker's CPU just before its first claim: start-up is not part of a call.
            startup_cpu = 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                sample = cpu_seconds(worker.pid)
                if anything_claimed():
                    break
                startup_cpu = sample
                time.sleep(0.01)
            spy = _start_profiler(worker.pid, args.profile) if args.profile else None
            servers_before = {pid: _cpu_or_zero(pid) for pid in server_pids()}
            redis_pid = int(client.redis.info("server")["process_id"])
            redis_before = _cpu_or_zero(redis_pid)

            def count_cdrs() -> int:
                with engine.connect() as connection:
                    return int(connection.execute(text("SELECT count(*) FROM cdrs")).scalar_one())

            wait_for(lambda: count_cdrs() >= calls, 600, f"{calls} CDRs")
            wait_for(lambda: _unpublished(engine) == 0, 60, "the outbox to empty")
            worker_cpu = cpu_seconds(worker.pid) - startup_cpu
            postgres_cpu = sum(_cpu_or_zero(pid) - servers_before.get(pid, 0.0)
                               for pid in server_pids())
            redis_cpu = _cpu_or_zero(redis_pid) - redis_before
            load_after = os.getloadavg()
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
                spy.wait(timeout=60)
            sipp_cpu = cpu_seconds(sipp.process.pid) if sipp.process else 0.0

            with engine.connect() as connection:
                legs = connection.execute(text(
                    "SELECT extract(epoch from l.claimed_at), extract(epoch from l.invited_at),"
                    " extract(epoch from l.answered_at), extract(epoch from l.ended_at),"
                    " extract(epoch from c.recorded_at), c.correlation_id, c.disposition"
                    " FROM legs l JOIN cdrs c ON c.leg_id = l.id")).all()
            claimed = [float(r[0]) for r in legs]
            recorded = [float(r[4]) for r in legs]
            elapsed = max(recorded) - min(claimed)
            reader = EventReader(client.redis, settings, ["bench"])
            events: list[StreamEvent] = []
            while batch := reader.read(count=10_000):
                events.extend(item.event for item in batch)
            histories = events_by_leg(events)
            complete = sum(
                1 for leg in leg_ids
                if histories.get(leg) and histories[leg][-1].state in ("ended", "failed",
                                                                      "cancelled")
                and [e.seq for e in histories[leg]] == list(range(1, len(histories[leg]) + 1))
            )
            answered = sum(1 for r in legs if r[6] == "answered")

            print(f"calls                      {calls}")
            how = (f"enqueue_dials, {args.batch} per message" if args.batch > 0
                   else "enqueue_dial, 8 client threads")
            print(f"enqueue ({how}) {calls / enqueue_seconds:8.0f} dials/s")
            print(f"end to end, one worker     {calls / elapsed:8.0f} calls/s "
                  f"({elapsed:.2f} s from first claim to last CDR, broker {args.broker})")
            if uac is not None:
                print(f"UAC only (uac_load.py)     {uac['cps']:8.0f} calls/s "
                      f"({uac['calls']} calls offered at {uac['offered_rate']:.0f}/s, "
                      f"{uac['failed']} failed, just before); end to end is "
                      f"{calls / elapsed / uac['cps']:.2f} of it")
            print(f"loss check                 CDRs {len(legs)}/{calls}, distinct correlation "
                  f"ids {len({r[5] for r in legs})}, answered {answered}, complete event "
                  f"histories {complete}/{calls}, stream entries {len(events)}")
            print(f"claim -> INVITE sent       {percentiles([r[1] - r[0] for r in _f(legs)])}")
            print(f"INVITE -> answered (SIPp)  {percentiles([r[2] - r[1] for r in _f(legs)])}")
            print(f"ended -> CDR committed     {percentiles([r[4] - r[3] for r in _f(legs)])}")
            print(f"claims per second spread   "
                  f"{statistics.pstdev(claimed):.2f} s stdev over {elapsed:.2f} s")
            print(f"CPU seconds                worker {worker_cpu:.1f}, sipp {sipp_cpu:.1f} "
                  f"({worker_cpu / calls * 1000:.2f} ms of worker CPU per call, "
                  f"start-up {startup_cpu:.1f} s left out)")
            print(f"server CPU per call        PostgreSQL backends "
                  f"{postgres_cpu / calls * 1000:.2f}"
                  f" ms, Redis (broker + streams) {redis_cpu / calls * 1000:.2f} ms, "
                  f"SIPp {sipp_cpu / calls * 1000:.2f} ms")
            print(f"load average               {load_before[0]:.2f} before, "
                  f"{load_after[0]:.2f} at the end (1 min)")
            if args.profile is not None and args.profile.exists():
                with args.profile.open() as lines:
                    print(render(summarise(lines), cpu_ms_per_call=worker_cpu / calls * 1000))
            ok = len(legs) == calls and complete == calls
            worker.close()
            worker = None
            client.close()
            return 0 if ok else 1
    finally:
        if worker is not None:
            worker.close()
        sipp.stop()
        redis_server.close()
        if vhost is not None:
            vhost.close()


def _uac_only(calls: int, rate: float) -> dict[str, Any]:
    """bench/uac_load.py's figures (our UAC alone against sipp -sn uas)."""
    done = subprocess.run(
        [str(PYTHON), str(Path(__file__).with_name("uac_load.py")), "--calls", str(calls),
         "--rate", str(rate), "--no-sipp-uac", "--json"],
        capture_output=True, text=True, check=False, timeout=600,  # exit 1: some calls failed
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cpu_or_zero(pid: int | None) -> float:
    try:
        return cpu_seconds(pid) if pid else 0.0
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # the process ended


def _start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    spy = PYTHON.parent / "py-spy"
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--format", "raw", "--threads", "--gil",
         "--rate", "100", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _f(rows: Sequence[Any]) -> list[tuple[float, ...]]:
    return [tuple(float(v) for v in row[:5]) for row in rows if all(v is not None for v in row[:5])]


def _unpublished(engine: object) -> int:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(connection.execute(
            text("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")).scalar_one())


if __name__ == "__main__":
    raise SystemExit(main())
