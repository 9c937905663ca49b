"""The `outbound dial`, `outbound events` and `outbound worker` commands as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.sipp.harness import requires_sipp
from tests.worker_stack import Stack
from tests.workers_harness import PYTHON, REPO_ROOT


def outbound(*args: str, env: dict[str, str] | None = None, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTHON), "-m", "cli.main", *args], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_worker_refuses_a_bad_trunks_file_naming_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "trunks.toml"
    bad.write_text('[trunks.t1]\nproxy = "127.0.0.1:5060"\ncps = -3\n')
    result = outbound("worker", "--trunk", "t1", "--trunks", str(bad))
    assert result.returncode == 2, result.stderr
    assert f"{bad}: trunks.t1.cps: must be a number >= 0.001, got -3" in result.stderr
    assert "Traceback" not in result.stderr
    missing = bad.with_name("none.toml")
    result = outbound("worker", "--trunk", "t9", "--trunks", str(missing))
    assert result.returncode == 2, result.stderr
    assert f"{missing}: cannot read trunks file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.services
@pytest.mark.sipp
@requires_sipp
def test_dial_wait_prints_events_and_cdr_and_events_tails_the_stream(stack: Stack) -> None:
    carrier = stack.sipp("uas_answer_remote_bye.xml", 1, hold_ms=200, reason_cause="16")
    stack.configure_trunk(carrier)
    stack.start_worker("w1@cli")
    env = {**stack.env, "OUTBOUND_TRUNKS_FILE": str(stack.trunks_file)}
    dialed = outbound("dial", "--trunk", "t1", "--to", "+15550199", "--correlation-id", "cli-1",
                      "--wait", "--json", "--timeout", "30", env=env)
    assert dialed.returncode == 0, dialed.stderr
    lines = [json.loads(line) for line in dialed.stdout.splitlines()]
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "queued" and kinds[-1] == "cdr" and "event" in kinds
    states = [line["state"] for line in lines if line["type"] == "event"]
    assert states[0] == "invited" and states[-1] == "ended" and "established" in states
    cdr = lines[-1]
    assert cdr["correlation_id"] == "cli-1" and cdr["disposition"] == "answered"
    assert cdr["to_uri"].startswith("sip:+15550199@127.0.0.1")

    tailed = outbound("events", "--trunk", "t1", "--json", env=env)
    assert tailed.returncode == 0, tailed.stderr
    events = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert [e["state"] for e in events] == states
    grouped = outbound("events", "--trunk", "t1", "--group", "g1", "--count", "2", "--json",
                       env=env)
    again = outbound("events", "--trunk", "t1", "--group", "g1", "--json", env=env)
    seen = [json.loads(line)["event_id"] for line in grouped.stdout.splitlines()]
    rest = [json.loads(line)["event_id"] for line in again.stdout.splitlines()]
    assert seen + rest == [e["event_id"] for e in events]  # the group acknowledged the first 2
