"""Trunk groups end to end: two real worker processes (trunks a and b of one group), SIPp far
ends; a leg's typed outcome decides whether its call is handed to the next trunk's queue."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sipp.harness import LOOPBACK, free_ports, requires_sipp
from tests.worker_stack import TERMINAL, Stack, events_by_leg
from tests.workers_harness import WorkerProcess, wait_for
from workers.client import DialClient
from workers.contract.dial_message import message_leg_id
from workers.events.stream import StreamEvent

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]


def _two_trunks(stack: Stack, proxy_a: str, proxy_b: str, keys_a: str = "") -> DialClient:
    """Trunks a (with `keys_a`) and b, group `fallback` = [a, b], one worker each."""
    stack.write_trunks(
        f'[defaults]\ntransport = "udp"\ncps = 50\ncaller_user = "+15550100"\n\n'
        f'[trunks.a]\nproxy = "{proxy_a}"\n{keys_a}\n[trunks.b]\nproxy = "{proxy_b}"\n\n'
        '[groups.fallback]\nmembers = ["a", "b"]\n'
    )
    assert stack.client is not None
    for trunk in ("a", "b"):
        worker = WorkerProcess(trunk=trunk, trunks_file=stack.trunks_file,
                               name=f"w-{trunk}@failover", env=stack.env,
                               log_dir=stack.tmp_path, extra_args=("--sip-port", "0"))
        stack.workers.append(worker.start())
    for worker in stack.workers:
        stack.wait_worker_ready(worker)
    return stack.client


def _terminals(stack: Stack) -> dict[str, StreamEvent]:
    """Every terminal event of trunks a and b, by leg id."""
    events = stack.stream_events("a") + stack.stream_events("b")
    return {leg: history[-1] for leg, history in events_by_leg(events).items()
            if history[-1].state in TERMINAL}


def _wait_terminals(stack: Stack, legs: set[str], timeout: float) -> dict[str, StreamEvent]:
    wait_for(lambda: legs <= set(_terminals(stack)), timeout, f"terminal events of {legs}")
    return _terminals(stack)


def _cdrs(stack: Stack) -> dict[str, Any]:
    rows = stack.rows("SELECT leg_id, trunk, correlation_id, outcome, attempt, next_trunk, "
                      "routed_via, final_status_code, disposition FROM cdrs")
    return {str(row[0]): row for row in rows}


def _leg(trunk: str, correlation_id: str) -> str:
    return str(message_leg_id(trunk, correlation_id))


def test_user_and_config_outcomes_stay_a_capacity_outcome_moves_to_the_next_trunk(
    stack: Stack,
) -> None:
    busy = stack.sipp("uas_busy.xml", 1)
    missing = stack.sipp("uas_reject_404.xml", 1)
    full = stack.sipp("uas_reject_503.xml", 1)
    answer = stack.sipp("uas_answer.xml", 1)
    client = _two_trunks(stack, f"{LOOPBACK}:{busy.port}", f"{LOOPBACK}:{answer.port}")
    dials = {"busy": busy, "missing": missing, "full": full}
    for name, far_end in dials.items():
        client.enqueue_dial("a", "+15551230000", correlation_id=name, route="fallback",
                            signaling_addr=f"{LOOPBACK}:{far_end.port}", max_duration=1.0)
    first = {name: _leg("a", name) for name in dials}
    terminals = _wait_terminals(stack, {*first.values(), _leg("b", "full")}, timeout=60)

    for far_end in (*dials.values(), answer):
        result = far_end.wait(timeout=30)
        assert result.successful_calls == 1 and result.stat("IncomingCall") == 1, (
            result.explain())
    cdrs = _cdrs(stack)
    # the callee said busy, the number does not exist: final on the first trunk
    for name, outcome, status in (("busy", "user", 486), ("missing", "config", 404)):
        row, event = cdrs[first[name]], terminals[first[name]]
        assert (row[3], row[4], row[5], row[7]) == (outcome, 1, None, status)
        assert event.outcome is not None
        assert (event.outcome["outcome"], event.outcome["final"],
                event.outcome["next_trunk"], event.outcome["attempt"]) == (
            outcome, "true", "", "1")
    # a plain 503 (no Retry-After) is the carrier's lack of room: the call goes to trunk b
    row, event = cdrs[first["full"]], terminals[first["full"]]
    assert (row[3], row[4], row[5], row[7]) == ("capacity", 1, "b", 503)
    assert event.outcome is not None
    assert (event.outcome["final"], event.outcome["next_trunk"]) == ("false", "b")
    assert row[6] == f"udp:{LOOPBACK}:{full.port}"
    second = _leg("b", "full")
    row, event = cdrs[second], terminals[second]
    assert (row[1], row[2], row[3], row[4], row[5], row[8]) == (
        "b", "full", "user", 2, None, "answered")
    assert row[6] == f"udp:{LOOPBACK}:{answer.port}"
    assert event.outcome is not None and event.outcome["final"] == "true"
    assert event.outcome["attempt"] == "2"
    # one leg and one CDR per attempt; trunk b never saw the busy or missing callee
    legs = stack.rows("SELECT trunk, correlation_id FROM legs ORDER BY trunk, correlation_id")
    assert [tuple(leg) for leg in legs] == [
        ("a", "busy"), ("a", "full"), ("a", "missing"), ("b", "full")]
    assert len(cdrs) == 4
    finals = [e.correlation_id for e in terminals.values()
              if e.outcome is not None and e.outcome["final"] == "true"]
    assert sorted(finals) == ["busy", "full", "missing"]


def test_a_timeout_on_the_first_trunk_is_completed_on_the_second(stack: Stack) -> None:
    answer = stack.sipp("uas_answer.xml", 1)
    down = f"{LOOPBACK}:{free_ports(1)}"  # nothing listens: Timer B (32 s) ends the attempt
    client = _two_trunks(stack, down, f"{LOOPBACK}:{answer.port}")
    client.enqueue_dial("a", "+15551230001", correlation_id="silent", route="fallback",
                        max_duration=1.0)
    first, second = _leg("a", "silent"), _leg("b", "silent")
    terminals = _wait_terminals(stack, {first, second}, timeout=90)
    result = answer.wait(timeout=30)
    assert result.successful_calls == 1, result.explain()
    cdrs = _cdrs(stack)
    assert (cdrs[first][3], cdrs[first][5], cdrs[first][7]) == ("network", "b", None)
    assert (cdrs[second][3], cdrs[second][4], cdrs[second][8]) == ("user", 2, "answered")
    first_fields, second_fields = terminals[first].outcome, terminals[second].outcome
    assert first_fields is not None and second_fields is not None
    assert (first_fields["final"], first_fields["next_trunk"]) == ("false", "b")
    assert second_fields["final"] == "true"


def test_a_route_that_is_not_a_group_of_the_trunk_is_rejected(stack: Stack) -> None:
    answer = stack.sipp("uas_answer.xml", 1)
    client = _two_trunks(stack, f"{LOOPBACK}:{answer.port}", f"{LOOPBACK}:{answer.port}")
    client.enqueue_dial("a", "+15551230002", correlation_id="lost", route="nowhere")

    def rejected() -> StreamEvent | None:
        return next((e for e in stack.stream_events("a") if e.state == "rejected"), None)

    wait_for(lambda: rejected() is not None, 30, "the rejected event")
    event = rejected()
    assert event is not None and "route" in event.reason and "nowhere" in event.reason
    assert stack.rows("SELECT id FROM legs") == []


def test_a_trunk_its_health_checks_took_down_hands_its_dials_to_the_next_trunk(
    stack: Stack,
) -> None:
    answer = stack.sipp("uas_answer.xml", 2)
    silent = f"{LOOPBACK}:{free_ports(1)}"  # nothing answers trunk a's OPTIONS
    health = ("health_check = true\nhealth_interval = 0.2\nhealth_timeout = 0.3\n"
              "health_down_after = 2\nhealth_up_after = 2\nhealth_stale_after = 30\n")
    client = _two_trunks(stack, silent, f"{LOOPBACK}:{answer.port}", keys_a=health)
    health_key = stack.settings.key("health", "a")
    wait_for(lambda: stack.redis.hget(health_key, "up") == b"0", 30,
             "trunk a marked down by its health checks")
    for name in ("down-1", "down-2"):
        client.enqueue_dial("a", "+15551230003", correlation_id=name, route="fallback",
                            max_duration=1.0)
    legs = {name: (_leg("a", name), _leg("b", name)) for name in ("down-1", "down-2")}
    terminals = _wait_terminals(stack, {leg for pair in legs.values() for leg in pair},
                                timeout=30)
    result = answer.wait(timeout=30)
    assert result.successful_calls == 2 and result.stat("IncomingCall") == 2, result.explain()
    cdrs = _cdrs(stack)
    for first, second in legs.values():
        # not dialled on trunk a (no INVITE, no status): capacity, handed to b, answered there
        assert (cdrs[first][3], cdrs[first][5], cdrs[first][7]) == ("capacity", "b", None)
        assert (cdrs[second][3], cdrs[second][4], cdrs[second][8]) == ("user", 2, "answered")
        first_fields, second_fields = terminals[first].outcome, terminals[second].outcome
        assert first_fields is not None and second_fields is not None
        assert (first_fields["final"], first_fields["next_trunk"]) == ("false", "b")
        assert second_fields["final"] == "true"
