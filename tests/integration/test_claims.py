"""Batches of JSON dial messages against the real PostgreSQL and Redis: one INSERT for a
batch with repeats inside and across batches, and a worker runtime (in this process, SIPp as
the carrier) taking a batch with a bad, a repeated and an expired message, and one while
PostgreSQL cannot be reached (everything requeued, nothing stored)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models import operations
from models.db import make_engine
from models.enums import LegState
from models.repository import Repository
from models.transient import retry_policy
from tests.sipp.harness import free_ports, requires_sipp
from tests.worker_stack import Stack, events_by_leg
from tests.workers_harness import wait_for
from workers.config.trunks import load_trunks
from workers.contract.dial_message import message_leg_id, parse_dial_message
from workers.contract.intake import dead_letter_stream
from workers.runtime.claims import DialIntake, Settle
from workers.runtime.worker import WorkerOptions, WorkerRuntime

pytestmark = [pytest.mark.services]


def dial(correlation_id: str, trunk: str = "t1", **fields: Any) -> dict[str, Any]:
    return {"version": 1, "correlation_id": correlation_id, "trunk": trunk,
            "to": "sip:+15550123@127.0.0.1:5999", **fields}


def test_one_insert_stores_a_batch_with_repeats_inside_and_across_batches(
    database_url: str,
) -> None:
    repository = Repository.from_url(database_url)
    try:
        messages = [parse_dial_message(dial(cid)) for cid in ("a", "b", "a", "c", "b")]
        stored = [(message_leg_id(m.trunk, m.correlation_id), m) for m in messages]
        first = repository.run_connection(operations.store_dial_legs, stored)
        assert [leg.correlation_id for leg in first] == ["a", "b", "c"]
        assert [leg.leg_id for leg in first] == [message_leg_id("t1", c) for c in "abc"]
        # an older client stored "d" under a random id: the live leg is found, not doubled
        older = parse_dial_message(dial("d"))
        other_id = uuid.uuid4()
        repository.run(operations.insert_leg, older, other_id)
        repository.run_connection(operations.claim_for_dial, worker="w", token=uuid.uuid4(),
                                  at=datetime.now(UTC), leg_ids=[first[0].leg_id])
        again = repository.run_connection(operations.store_dial_legs, [
            *stored, (message_leg_id("t1", "d"), parse_dial_message(dial("d")))])
        assert [(leg.correlation_id, leg.state) for leg in again] == [
            ("a", LegState.CLAIMED), ("b", LegState.QUEUED), ("c", LegState.QUEUED),
            ("d", LegState.QUEUED)]
        assert again[3].leg_id == other_id
        with repository.engine.connect() as connection:
            count = connection.exec_driver_sql("SELECT count(*) FROM legs").scalar_one()
        assert count == 4
    finally:
        repository.engine.dispose()


@pytest.fixture
def runtime(stack: Stack) -> Iterator[WorkerRuntime]:
    carrier = stack.sipp("uas_answer_remote_bye.xml", 1, hold_ms=100, reason_cause="16")
    stack.configure_trunk(carrier)
    trunk = load_trunks(stack.trunks_file).get(stack.trunk)
    worker = WorkerRuntime(WorkerOptions(settings=stack.settings, trunk=trunk,
                                         node="claims@test")).start()
    try:
        yield worker
    finally:
        worker.stop(drain_timeout=5.0)


def legs(stack: Stack) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for correlation_id, state in stack.rows("SELECT correlation_id, state FROM legs"):
        found.setdefault(correlation_id, []).append(state)
    return found


@requires_sipp
@pytest.mark.sipp
def test_a_batch_with_a_bad_a_repeated_and_an_expired_message(
    stack: Stack, runtime: WorkerRuntime,
) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    to = f"sip:+15550123@{stack.proxy}"
    raws = [json.dumps(body).encode() for body in (
        dial("good-1", to=to),
        dial("bad-1", ring_timeout=-1),
        dial("good-1", to=to),  # repeated inside the batch
        dial("late-1", to=to, not_after=past),
    )] + [b"{not json"]
    verdicts = DialIntake(runtime).take(raws, enqueued_at=None)
    assert verdicts == [Settle.ACK] * 5  # stored, refused or a repeat: all done with

    assert set(legs(stack)) == {"good-1", "late-1"}  # one leg each, nothing for the bad ones
    cdrs = stack.wait_cdrs([str(message_leg_id(stack.trunk, c)) for c in ("good-1", "late-1")],
                           timeout=30)
    assert sorted(row[1:3] for row in cdrs.values()) == [
        ("good-1", "answered"), ("late-1", "failed")]
    assert stack.sipps[0].wait(timeout=30).successful_calls == 1  # the expired one: no INVITE
    wait_for(lambda: stack.rows("SELECT 1 FROM outbox_events WHERE published_at IS NULL")
             == [], 30, "the events to be published")
    events = stack.stream_events()
    late = str(message_leg_id(stack.trunk, "late-1"))
    assert [e.state for e in events_by_leg(events)[late]] == ["expired"]
    rejected = {e.correlation_id: e.reason for e in events if e.state == "rejected"}
    assert len(rejected) == 2 and "ring_timeout" in rejected["bad-1"]
    dead = stack.redis.xrange(dead_letter_stream(stack.settings, stack.trunk))
    assert {fields[b"raw"] for _, fields in dead} == {raws[1], b"{not json"}
    # the same batch again: repeats, nothing dialled twice
    assert DialIntake(runtime).take(raws[:1] + raws[2:4]) == [Settle.ACK] * 3
    assert legs(stack) == {"good-1": ["ended"], "late-1": ["failed"]}


@requires_sipp
@pytest.mark.sipp
def test_postgresql_unavailable_requeues_the_batch_and_stores_nothing(
    stack: Stack, runtime: WorkerRuntime,
) -> None:
    to = f"sip:+15550123@{stack.proxy}"
    raws = [json.dumps(dial(f"pg-{index}", to=to)).encode() for index in range(3)]
    raws.append(json.dumps(dial("bad-2", rtp_port="x")).encode())
    real = runtime.repository
    # nothing listens on this loopback port: every connection is refused
    runtime.repository = Repository(
        make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_ports(1)}/outbound"),
        retry=retry_policy(attempts=2, initial=0.01, maximum=0.02))
    try:
        verdicts = DialIntake(runtime).take(raws)
    finally:
        runtime.repository.engine.dispose()
        runtime.repository = real
    # the good ones go back to the queue; the bad one is refused for good
    assert verdicts == [Settle.REQUEUE] * 3 + [Settle.ACK]
    assert legs(stack) == {}
    # redelivered once PostgreSQL answers: stored and dialled
    assert DialIntake(runtime).take(raws[:1]) == [Settle.ACK]
    assert set(legs(stack)) == {"pg-0"}
