"""`outbound cancel` and `outbound hangup` as a user runs them, against a real worker process,
PostgreSQL, Redis and SIPp far ends: what they print and their exit status."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.sipp.harness import requires_sipp
from tests.worker_stack import Stack
from tests.workers_harness import PYTHON, REPO_ROOT

pytestmark = pytest.mark.timeout(180)


def outbound(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTHON), "-m", "cli.main", *args], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60, env={**os.environ, **(env or {})},
    )


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert "Traceback" not in result.stderr, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


USAGE_ERRORS = [
    ((), "give exactly one of --correlation-id or --call-id"),
    (("--correlation-id", "a", "--call-id", "b"), "give exactly one of"),
    (("--call-id", " "), "--call-id must not be empty"),
    (("--call-id", "x", "--timeout", "0"), "Invalid value for '--timeout'"),
]


@pytest.mark.parametrize("action", ["cancel", "hangup"])
def test_usage_errors_exit_2_without_a_traceback(action: str) -> None:
    for args, message in USAGE_ERRORS:
        result = outbound(action, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.services
@pytest.mark.sipp
@requires_sipp
def test_cancel_and_hangup_commands_act_through_the_owner_and_say_what_happened(
    stack: Stack,
) -> None:
    answering = stack.sipp("uas_answer.xml", 1)  # answers, waits for our BYE
    ringing = stack.sipp("uas_ring_cancel.xml", 1)  # rings until our CANCEL
    stack.configure_trunk(answering)
    stack.start_worker("w1@cli-control")
    env = stack.env
    up = stack.enqueue(1, prefix="up")[0]
    ring_addr = f"127.0.0.1:{ringing.port}"
    rung = stack.enqueue(1, prefix="ring", to_host=ring_addr, signaling_addr=ring_addr)[0]
    stack.wait_states([up.leg_id], {"established"}, timeout=30)
    stack.wait_states([rung.leg_id], {"ringing"}, timeout=30)
    rung_call_id = stack.rows("SELECT call_id FROM legs WHERE id = :id", id=rung.leg_id)[0][0]

    refused = outbound("cancel", "--correlation-id", up.correlation_id, "--json", env=env)
    assert refused.returncode == 1
    assert as_json(refused)["result"] == "answered"
    assert "use hangup" in str(as_json(refused)["detail"])

    elsewhere = outbound("cancel", "--call-id", rung_call_id, "--trunk", "t9", env=env)
    assert elsewhere.returncode == 1
    assert "is on trunk 't1', not 't9'" in elsewhere.stderr

    cancelled = outbound("cancel", "--call-id", rung_call_id, "--trunk", "t1", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("sent: CANCEL sent (leg ")

    hung_up = outbound("hangup", "--correlation-id", up.correlation_id, "--json", env=env)
    assert hung_up.returncode == 0, hung_up.stderr
    answer = as_json(hung_up)
    assert (answer["action"], answer["ok"], answer["result"], answer["detail"]) == (
        "hangup", True, "sent", "BYE sent")
    assert str(answer["worker"]).startswith("w1@cli-control")

    cdrs = stack.wait_cdrs([up.leg_id, rung.leg_id], timeout=30)
    assert cdrs[up.leg_id][2:4] == ("answered", "local")
    assert cdrs[rung.leg_id][2:4] == ("cancelled", "local")

    again = outbound("hangup", "--correlation-id", up.correlation_id, env=env)
    assert again.returncode == 1
    assert again.stderr.startswith("finished: leg already ended")
    unknown = outbound("hangup", "--correlation-id", "never-enqueued", "--json", env=env)
    assert unknown.returncode == 1
    assert as_json(unknown)["result"] == "unknown"
    assert answering.wait(timeout=20).successful_calls == 1
    assert ringing.wait(timeout=20).successful_calls == 1
