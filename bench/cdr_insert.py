"""Benchmark the persistence layer on the local PostgreSQL and print the figures.

Measures, in a temporary database (created, migrated, dropped):
  * CDR inserts on the worker's path: terminal events with their CDR and outbox row through
    LegRecorder (persist_batch in batches of 1,000), and one persist_batch per event;
  * leg creation and claims (one transaction each), and leg transitions through LegRecorder;
  * `outbound report` queries over N seeded CDRs (default 1,000,000) with the schema's indexes.

Run:  .venv/bin/python bench/cdr_insert.py [--cdrs 50000] [--seed 1000000] [--keep]
The server comes from OUTBOUND_DATABASE_URL (default postgresql://postgres@127.0.0.1/outbound).
Not a test: nothing here passes or fails; it prints what it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import URL, Engine

from migrations import runner
from models.db import database_url, make_engine
from models.operations import PendingCdr, Transition
from models.reporting import ReportRow, build_report
from models.repository import Repository
from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from workers.events.entries import StreamEvent
from workers.events.outbox import PostgresOutbox
from workers.events.publisher import EventPublisher
from workers.runtime.book import LegContext, PendingEvent
from workers.runtime.recorder import LegRecorder, persist_batch

SEED_START = datetime(2024, 5, 1, tzinfo=UTC)
SEED_DAYS = 30


@contextmanager
def temporary_database(keep: bool) -> Iterator[URL]:
    base = database_url()
    name = f"outbound_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def record(index: int, prefix: str) -> CdrRecord:
    start = 1_714_521_600.0 + index * 0.01
    answered = index % 5 < 2
    return CdrRecord(
        call_id=f"{prefix}-{index}@bench",
        correlation_id=f"{prefix}-corr-{index}",
        scenario="campaign",
        trunk=f"trunk-{index % 8}",
        from_uri="sip:caller@bench.test",
        to_uri=f"sip:+1555{index:07d}@carrier.test",
        started_at=start,
        first_provisional_at=start + 0.3,
        answered_at=start + 4 if answered else None,
        ended_at=start + (64 if answered else 20),
        final_status_code=200 if answered else 486,
        disposition=Disposition.ANSWERED if answered else Disposition.BUSY,
        hangup_reason=HangupReason.NORMAL,
        hangup_by=HangupBy.REMOTE,
        codec="PCMA" if answered else None,
    )


def rate(count: int, seconds: float) -> str:
    return f"{count:>9,d} in {seconds:6.2f} s = {count / seconds:>10,.0f}/s"


class DiscardingStream:
    """Stands in for the Redis stream: these figures are PostgreSQL's (the recorder still
    stores every outbox row and marks it published in its next batch, as in the worker)."""

    def write(self, events: Any) -> None:
        pass


def start_recorder(repository: Repository, batch_size: int = 1000) -> LegRecorder:
    """The worker's recorder as the worker wires it (outbox with deferred marks)."""
    outbox = PostgresOutbox(repository, trunk="bench", workers=["bench"], defer_marks=True)
    publisher = EventPublisher(DiscardingStream(), outbox)  # type: ignore[arg-type]
    return LegRecorder(
        repository, publisher, worker="bench", outbox=outbox, batch_size=batch_size
    ).start()


def context(leg_id: uuid.UUID | str) -> LegContext:
    return LegContext(leg_id=str(leg_id), trunk="bench", correlation_id=f"c-{leg_id}",
                      scenario="campaign")


def stream_event(leg: LegContext, state: str, at: float) -> StreamEvent:
    return StreamEvent(trunk="bench", leg_id=leg.leg_id, seq=leg.next_seq(), state=state,
                       call_id="", correlation_id=leg.correlation_id, scenario="campaign", at=at)


def cdr_event(index: int, prefix: str) -> PendingEvent:
    """A leg's terminal event with its CDR (what the recorder gets at a call's end)."""
    cdr = record(index, prefix)
    leg = context(uuid.uuid4())
    return PendingEvent(leg, stream_event(leg, "ended", cdr.ended_at or 0.0), None,
                        PendingCdr(cdr, "bench", None))


def bench_cdrs(repository: Repository, count: int, single: int) -> None:
    recorder = start_recorder(repository)
    events = [cdr_event(index, "batched") for index in range(count)]
    began = time.perf_counter()
    for pending in events:
        recorder.submit(pending)
    recorder.flush(timeout=600)
    elapsed = time.perf_counter() - began
    recorder.stop()
    print(
        f"CDR + outbox row, LegRecorder batches  {rate(recorder.stats.cdrs, elapsed)}"
        f"  ({recorder.stats.batches} batches)"
    )

    events = [cdr_event(index, "single") for index in range(single)]
    began = time.perf_counter()
    for pending in events:
        repository.run_connection(persist_batch, [pending], "bench")
    print(f"CDR + outbox row, one per transaction  {rate(single, time.perf_counter() - began)}")


def bench_legs(repository: Repository, count: int) -> None:
    legs = []
    began = time.perf_counter()
    for index in range(count):
        leg, _ = repository.create_leg(
            {"correlation_id": f"bench-{index}", "trunk": "t1", "request_uri": "sip:a@b.test"}
        )
        legs.append(leg.id)
    print(f"leg create (validate + insert)         {rate(count, time.perf_counter() - began)}")

    began = time.perf_counter()
    for leg_id in legs:
        repository.claim_leg(worker="bench", leg_id=leg_id)
    print(f"leg claim (UPDATE ... RETURNING)       {rate(count, time.perf_counter() - began)}")

    recorder = start_recorder(repository)
    now = time.time()
    contexts = {leg_id: context(leg_id) for leg_id in legs}
    steps: list[tuple[str, float, dict[str, Any]]] = [
        ("inviting", now, {"local_cseq": 1}),
        ("ringing", now + 0.3, {"last_status_code": 180}),
        ("established", now + 2, {"remote_tag": "rt"}),
        ("ended", now + 30, {}),
    ]
    events = []
    for state, at, fields in steps:
        for leg_id in legs:
            extra = {"call_id": f"{leg_id}@b"} if state == "inviting" else {}
            transition = Transition.make(leg_id, state, at, **fields, **extra)
            events.append(PendingEvent(contexts[leg_id],
                                       stream_event(contexts[leg_id], state, at), transition))
    began = time.perf_counter()
    for pending in events:
        recorder.submit(pending)
    recorder.flush(timeout=600)
    elapsed = time.perf_counter() - began
    recorder.stop()
    print(f"leg transitions + outbox, LegRecorder  {rate(recorder.stats.events, elapsed)}")


SEED_SQL = """
INSERT INTO cdrs (call_id, correlation_id, scenario, trunk, from_uri, to_uri, started_at,
    first_provisional_at, answered_at, ended_at, duration_ms, billsec, final_status_code,
    disposition, hangup_reason, hangup_by, codec, worker)
SELECT 'seed-' || g || '@bench', 'seed-' || g,
    (ARRAY['campaign', 'transfer_agent', 'callback', 'manual'])[1 + (g / 7) % 4],
    'trunk-' || (g % 8), 'sip:caller@bench.test', 'sip:+1555' || g || '@carrier.test',
    started, started + pdd, answered, ended,
    (EXTRACT(EPOCH FROM ended - started) * 1000)::bigint,
    CASE WHEN answered IS NULL THEN 0 ELSE ceil(EXTRACT(EPOCH FROM ended - answered))::int END,
    status, disposition,
    (ARRAY['normal', 'normal', 'normal', 'user_hangup', 'timer_expired', 'error'])[1 + g % 6],
    CASE WHEN g % 2 = 0 THEN 'local' ELSE 'remote' END,
    CASE WHEN answered IS NULL THEN NULL ELSE 'PCMA' END, 'bench'
FROM (
    SELECT g, started, pdd, disposition, status,
        CASE WHEN disposition = 'answered' THEN started + pdd + interval '4 s' END AS answered,
        started + pdd + interval '4 s' + (g % 300) * interval '1 s' AS ended
    FROM (
        SELECT g,
            :start + (g::float8 / :n) * :days * interval '1 day' AS started,
            (150 + (g * 7919) % 3000) * interval '1 ms' AS pdd,
            (ARRAY['answered', 'answered', 'answered', 'answered', 'answered', 'answered',
                   'answered', 'answered', 'busy', 'busy', 'busy', 'no_answer', 'no_answer',
                   'no_answer', 'cancelled', 'cancelled', 'rejected', 'failed', 'congestion',
                   'congestion'])[1 + (g * 7919) % 20] AS disposition,
            (ARRAY[200, 200, 200, 200, 200, 200, 200, 200, 486, 486, 600, 480, 480, 408, 487,
                   487, 603, 404, 503, 503])[1 + (g * 7919) % 20] AS status
        FROM generate_series(1::bigint, :n) AS g
    ) AS base
) AS calls
"""


def seed(engine: Engine, count: int) -> None:
    began = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE cdrs"))
        connection.execute(text(SEED_SQL), {"start": SEED_START, "n": count, "days": SEED_DAYS})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE cdrs"))
    print(f"seeded {count:,d} CDRs over {SEED_DAYS} days in {time.perf_counter() - began:.1f} s")


def timed(run: Callable[[], list[ReportRow]], repeat: int = 5) -> tuple[float, list[ReportRow]]:
    run()  # warm the cache: the figure is for a server that has the pages in memory
    times = []
    result: list[ReportRow] = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def bench_reports(engine: Engine) -> None:
    day = SEED_START + timedelta(days=12)
    week = SEED_START + timedelta(days=7)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("all CDRs, one total row", {}),
        ("all CDRs, --by trunk", {"by": "trunk"}),
        ("all CDRs, --by day", {"by": "day"}),
        ("one day, --by hour", {"since": day, "until": day + timedelta(days=1), "by": "hour"}),
        ("one day, --by trunk", {"since": day, "until": day + timedelta(days=1), "by": "trunk"}),
        (
            "one week, --by scenario",
            {"since": week, "until": week + timedelta(days=7), "by": "scenario"},
        ),
    ]
    for name, options in cases:

        def run(options: dict[str, Any] = options) -> list[ReportRow]:
            return build_report(engine, **options)

        seconds, rows = timed(run)
        attempts = sum(row.attempts for row in rows)
        print(f"report {name:<28} {seconds * 1000:8.1f} ms median  ({attempts:,d} CDRs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=50_000, help="CDRs for the batched insert")
    parser.add_argument("--single", type=int, default=2_000, help="CDRs one per transaction")
    parser.add_argument("--legs", type=int, default=2_000, help="legs to create, claim, move")
    parser.add_argument("--seed", type=int, default=1_000_000, help="CDRs for the report queries")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()

    with temporary_database(args.keep) as url:
        runner.upgrade(url)
        engine = make_engine(url)
        repository = Repository(engine)
        with engine.connect() as connection:
            version = connection.execute(text("SHOW server_version")).scalar_one()
        print(f"PostgreSQL {version}, {url.render_as_string(hide_password=True)}")
        bench_cdrs(repository, args.cdrs, args.single)
        bench_legs(repository, args.legs)
        seed(engine, args.seed)
        bench_reports(engine)
        engine.dispose()


if __name__ == "__main__":
    main()
