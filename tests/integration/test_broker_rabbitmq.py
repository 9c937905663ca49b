"""RabbitMQ as the broker (the real server, a vhost per test): quorum dial queues, publisher
confirms, dead letters, durable per-worker control queues, and no accepted dial lost when a
worker restarts or is killed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrations import runner
from models import operations
from tests.db_fixtures import temporary_database
from tests.rabbitmq import RabbitVhost, rabbitmqctl, requires_rabbitmq
from tests.sipp.harness import free_ports, requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history
from tests.workers_harness import wait_for
from workers.celery.app import create_app, dead_queue_name, dial_queue_name
from workers.contract.dial_message import message_leg_id
from workers.coordination.control import ControlResult, hangup

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp, requires_rabbitmq]


@pytest.fixture
def vhost() -> Iterator[RabbitVhost]:
    instance = RabbitVhost().start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def stack(tmp_path: Path, vhost: RabbitVhost) -> Iterator[Stack]:
    with temporary_database("outbound_rabbit") as url:
        runner.upgrade(url)
        instance = Stack(tmp_path, url.render_as_string(hide_password=False),
                         broker_url=vhost.url)
        try:
            yield instance
        finally:
            instance.close()


def assert_one_cdr_per_correlation_id(stack: Stack, leg_ids: list[str]) -> None:
    rows = stack.rows("SELECT leg_id, correlation_id FROM cdrs")
    assert len(rows) == len(leg_ids), f"{len(rows)} CDRs for {len(leg_ids)} legs"
    assert {str(row[0]) for row in rows} == set(leg_ids)
    assert len({row[1] for row in rows}) == len(leg_ids)


def test_dials_travel_on_quorum_queues_and_rejects_are_dead_lettered(
    stack: Stack, vhost: RabbitVhost
) -> None:
    calls = 12
    carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=200, reason_cause="16")
    stack.configure_trunk(carrier)
    queued = stack.enqueue(calls)  # before any worker: the publisher declares the queue
    stack.start_worker("w1@rabbit")
    leg_ids = [q.leg_id for q in queued]
    stack.wait_cdrs(leg_ids, timeout=60)
    assert_one_cdr_per_correlation_id(stack, leg_ids)
    assert_complete_event_history(stack.settled_events(leg_ids), leg_ids)

    queues = vhost.queues()
    dial, dead = queues[dial_queue_name("t1")], queues[dead_queue_name("t1")]
    control = queues["outbound.control.w1@rabbit"]
    assert dial["type"] == dead["type"] == control["type"] == "quorum", queues
    assert dial["durable"] and not dial["auto_delete"] and not control["auto_delete"]
    assert "outbound.dead" in dial["arguments"], dial

    # a message no worker can run (an unknown task) is rejected: it lands in the dead queue
    app = create_app(stack.settings)
    app.send_task("outbound.no_such_task", kwargs={"trunk": "t1"},
                  queue=dial_queue_name("t1"), routing_key=dial_queue_name("t1"))
    wait_for(lambda: vhost.queues()[dead_queue_name("t1")]["messages"] == 1, 30,
             "the rejected message in the dead-letter queue")
    assert vhost.queues()[dial_queue_name("t1")]["messages"] == 0


def test_hangup_reaches_a_live_call_and_a_restarting_owner(stack: Stack) -> None:
    carrier = stack.sipp("uas_answer.xml", 2)  # answers, then waits for our BYE
    stack.configure_trunk(carrier)
    client = stack.client
    assert client is not None
    sip_port = free_ports(1)  # the restarted worker gets the same address back
    worker = stack.start_worker("w1@control", sip_port=sip_port)
    first, second = stack.enqueue(2)
    stack.wait_states([first.leg_id, second.leg_id], {"established"}, timeout=30)

    started = time.perf_counter()
    answer = hangup(client, correlation_id=first.correlation_id, timeout=10)
    elapsed = time.perf_counter() - started
    assert answer.result == "sent", answer
    print(f"hangup of a live call over RabbitMQ answered in {elapsed * 1000:.0f} ms")

    # the owner dies; the request waits in its durable control queue until it is back
    worker.kill()
    results: list[ControlResult] = []
    asking = threading.Thread(target=lambda: results.append(
        hangup(client, correlation_id=second.correlation_id, timeout=90)))
    asking.start()
    wait_for(lambda: stack.rows(
        "SELECT 1 FROM legs WHERE id = :leg AND state = 'established'", leg=second.leg_id
    ) != [], 5, "the leg to be still up")
    stack.start_worker("w1@control", sip_port=sip_port)
    asking.join(timeout=120)
    assert results and results[0].result != "no_answer", results  # answered, not lost
    cdrs = stack.wait_cdrs([first.leg_id, second.leg_id], timeout=60)
    assert len(cdrs) == 2
    assert carrier.wait(timeout=30).successful_calls == 2  # both BYEs reached the carrier


def test_more_leg_id_dials_than_one_prefetch_window_all_complete(stack: Stack) -> None:
    # Celery task messages, run and acknowledged by the thread pool: prefetch 4 x 8 threads is
    # a window of 32. Before the fix a pool thread flushed the task-event buffer with a
    # publisher confirm that never came and the consumer thread waited on the dispatcher's
    # lock: the window stayed unacknowledged until RabbitMQ dropped the connection.
    calls = 400
    carrier = stack.sipp("uas_answer_remote_bye.xml", calls, reason_cause="16")
    stack.configure_trunk(carrier)
    assert stack.client is not None
    client = stack.client
    messages = [client.dial_message(stack.trunk, f"sip:+1555{index:07d}@{stack.proxy}",
                                    correlation_id=f"w-{index}-{uuid.uuid4().hex[:6]}")
                for index in range(calls)]
    stored = [(message_leg_id(m.trunk, m.correlation_id), m) for m in messages]
    client.repository.run(lambda session: [operations.insert_leg(session, m, leg_id)
                                           for leg_id, m in stored])
    for leg_id, message in stored:
        client.publish_dial(str(leg_id), stack.trunk, message.correlation_id)
    leg_ids = [str(leg_id) for leg_id, _ in stored]
    stack.start_worker("w1@window", concurrency=8, prefetch=4)
    stack.wait_cdrs(leg_ids, timeout=150)  # RabbitMQ's heartbeat timeout ended a stall later
    assert_one_cdr_per_correlation_id(stack, leg_ids)


def test_kill_9_and_restart_mid_run_lose_no_accepted_dial(stack: Stack) -> None:
    calls = 40
    carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=300, reason_cause="16")
    stack.cps = 10  # slow enough that dials are still queued and prefetched at the kill
    stack.configure_trunk(carrier)
    queued = stack.enqueue(calls)
    leg_ids = [q.leg_id for q in queued]
    sip_port = free_ports(1)
    victim = stack.start_worker("w1@faults", sip_port=sip_port)
    wait_for(lambda: len(stack.cdrs()) >= 5, 60, "a few calls done")
    victim.kill()  # kill -9 with prefetched, unacknowledged dials and live calls
    second = stack.start_worker("w1@faults", sip_port=sip_port)
    wait_for(lambda: len(stack.cdrs()) >= 20, 60, "more calls done")
    assert second.terminate(timeout=60) == 0  # a graceful restart
    stack.start_worker("w1@faults", sip_port=sip_port)
    stack.wait_cdrs(leg_ids, timeout=120)
    assert_one_cdr_per_correlation_id(stack, leg_ids)
    assert_complete_event_history(stack.settled_events(leg_ids), leg_ids)


# Restarts this machine's RabbitMQ (`rabbitmqctl stop_app && rabbitmqctl start_app`): tests
# run one at a time, so nothing else loses its broker; a session running other RabbitMQ work
# beside the suite would see a ten-second outage.
def test_rabbitmq_restart_loses_no_accepted_dial(stack: Stack, vhost: RabbitVhost) -> None:
    calls = 30
    carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=300, reason_cause="16")
    stack.cps = 8  # dials still queued (on disk, quorum) and prefetched at the restart
    stack.configure_trunk(carrier)
    queued = stack.enqueue(calls)
    leg_ids = [q.leg_id for q in queued]
    stack.start_worker("w1@rabbit-restart")
    wait_for(lambda: len(stack.cdrs()) >= 5, 60, "a few calls done")
    try:
        rabbitmqctl("stop_app")
    finally:
        rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    stack.wait_cdrs(leg_ids, timeout=180)
    assert_one_cdr_per_correlation_id(stack, leg_ids)
    assert_complete_event_history(stack.settled_events(leg_ids), leg_ids)
    # A message redelivered after the restart may still be on its way to its duplicate-claim
    # ack when the last CDR lands: the queue must drain, not hold a stranded message.
    wait_for(lambda: vhost.queues()[dial_queue_name("t1")]["messages"] == 0, 60,
             "the dial queue drained after the restart")
