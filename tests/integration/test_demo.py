"""`outbound demo`: the progress view, and whole runs on embedded backends and on the real
PostgreSQL and Redis."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cli.demo.progress import CampaignProgress, ProgressPrinter, describe
from workers.events.stream import StreamEvent

REPO = Path(__file__).resolve().parents[2]


def event(correlation_id: str, seq: int, state: str, status: int | None = None) -> StreamEvent:
    return StreamEvent(trunk="demo", leg_id=f"leg-{correlation_id}", seq=seq, state=state,
                       call_id=f"{correlation_id}@h", correlation_id=correlation_id,
                       scenario="campaign", status_code=status, reason="", at=1_700_000_000.5)


def test_a_terminal_event_line_says_how_the_call_ended_as_the_report_does() -> None:
    # A ring timeout and an operator's cancel are both `cancelled 487` on the wire: only the
    # disposition tells them apart (the report counts the first as no_answer).
    timed_out = dataclasses.replace(
        event("a", 3, "cancelled", 487),
        outcome={"disposition": "no_answer", "hangup_reason": "timer_expired"},
    )
    assert describe(timed_out).endswith("cancelled   487  [no_answer, timer_expired]")
    assert "[" not in describe(event("a", 1, "invited"))


def test_progress_counts_each_call_once_and_knows_when_it_is_done() -> None:
    progress = CampaignProgress(total=3)
    for item in (event("a", 1, "invited"), event("a", 2, "provisional", 180),
                 event("a", 3, "established", 200), event("b", 1, "invited"),
                 event("b", 2, "failed", 486), event("c", 1, "failed", None)):
        assert progress.add(item)
    assert not progress.add(event("b", 2, "failed", 486))  # a redelivered entry
    assert (len(progress.placed), len(progress.answered), progress.failed) == (3, 1, 2)
    assert progress.in_progress == 1 and not progress.done
    progress.add(event("a", 4, "ended", 200))
    assert progress.done and progress.failed == 2
    assert progress.line().startswith("[" + "#" * 24 + "] 3/3 done")


def test_printer_on_a_pipe_prints_events_and_a_progress_line_every_few_calls() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(CampaignProgress(total=2), out, every=1)
    printer.event(event("a", 1, "invited"))
    printer.event(event("a", 2, "failed", 603))
    printer.event(event("a", 2, "failed", 603))
    printer.event(event("b", 1, "ended", 200))
    printer.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == describe(event("a", 1, "invited"))
    events = [line for line in lines if not line.startswith("[")]
    progress = [line.split("]")[1].split("|")[0].strip() for line in lines
                if line.startswith("[")]
    assert len(events) == 3 and "failed" in events[1] and "603" in events[1]
    assert progress == ["0/2 done", "1/2 done", "2/2 done"]  # each count once, repeats ignored
    assert "\r" not in out.getvalue()


def run_demo(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--workdir", str(tmp_path),
         "--calls", "6", "--cps", "20", "--ring", "0.2", "--hold", "0.5", "--ring-timeout", "2",
         "--seed", "5", "--timeout", "90", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    return result.returncode, result.stdout + result.stderr


def check_run(output: str, trunk_pattern: str) -> None:
    row = re.search(rf"(?m)^({trunk_pattern})\s+(\d+)\s+(\d+)\s+", output)
    assert row, f"no report row in:\n{output}"
    attempts, answered = int(row[2]), int(row[3])
    assert attempts == 6
    carrier_answered = int(re.search(r"(?m)^\s+answered\s+(\d+)$", output)[1])  # type: ignore[index]
    assert answered == carrier_answered
    dispositions = re.search(rf"(?m)^per disposition\n.*\n.*\n{row[1]}\s+([\d\s]+)$", output)
    assert dispositions and sum(map(int, dispositions[1].split())) == 6, output
    assert "6/6 done" in output


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTBOUND_")}


def test_demo_runs_with_nothing_else_running(tmp_path: Path) -> None:
    code, output = run_demo(tmp_path, clean_env())
    assert code == 0, output
    assert "database:        embedded SQLite file" in output
    assert "broker + events: embedded in-process Redis-protocol server" in output
    check_run(output, "demo")
    assert (tmp_path / "outbound-demo.sqlite").exists()
    assert re.search(r"call-0\d\s+invited", output), "events are not shown"


@pytest.fixture
def database() -> Iterator[str]:
    name = f"outbound_demo_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.services
def test_demo_uses_postgresql_and_redis_when_configured(tmp_path: Path, database: str) -> None:
    env = {**clean_env(), "OUTBOUND_DATABASE_URL": database,
           "OUTBOUND_REDIS_URL": "redis://127.0.0.1:6379/13"}
    code, output = run_demo(tmp_path, env, "--quiet-events")
    assert code == 0, output
    assert f"database:        {database}" in output and "OUTBOUND_DATABASE_URL" in output
    assert "broker + events: redis://127.0.0.1:6379/13 (OUTBOUND_REDIS_URL)" in output
    check_run(output, r"demo-[0-9a-f]{6}")
    assert not (tmp_path / "outbound-demo.sqlite").exists()
    assert "invited" not in output


def test_demo_says_which_backend_is_unusable(tmp_path: Path) -> None:
    env = {**clean_env(), "OUTBOUND_REDIS_URL": "redis://127.0.0.1:1/0"}
    code, output = run_demo(tmp_path, env)
    assert code == 2 and "cannot use Redis redis://127.0.0.1:1/0" in output
    assert "Traceback" not in output
