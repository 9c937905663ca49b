"""The queue contract end to end: plain JSON dial messages put on `dial.<trunk>.json` with a
plain Redis client (what `redis-cli LPUSH` does, docs/dial-message.md), a real worker, SIPp as
the carrier: one call and one CDR per correlation_id, repeats dial once, bad messages are
refused with a `rejected` event and a dead letter, late ones end as `expired`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.sipp.harness import requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history, events_by_leg
from tests.workers_harness import wait_for
from workers.celery.redis_intake import inflight_entries, inflight_key, owners_key
from workers.contract.intake import dead_letter_stream
from workers.contract.queues import dial_message_queue_name
from workers.coordination.recovery import heartbeat_key

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]


def envelope(queue: str, body: bytes) -> bytes:
    """The list entry kombu's Redis transport reads: the JSON body as a string, its content
    type, and a delivery tag and routing information of the publisher's choosing."""
    return json.dumps({
        "body": body.decode(), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {},
        "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "utf-8",
                       "delivery_info": {"exchange": "", "routing_key": queue}},
    }).encode()


def publish(stack: Stack, message: dict[str, Any] | bytes) -> None:
    """LPUSH dial.<trunk>.json <envelope>: no Celery, no outbound code on the way."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    queue = dial_message_queue_name(stack.trunk)
    stack.redis.lpush(queue, envelope(queue, body))


DOC = Path(__file__).resolve().parents[2] / "docs" / "dial-message.md"


def publish_with_the_documented_shell_snippet(stack: Stack, correlation_id: str) -> None:
    """Run docs/dial-message.md's redis-cli snippet as written (trunk, id and port put in)."""
    text = DOC.read_text().split("### Redis", 1)[1]
    snippet = re.search(r"```sh\n(.*?)```", text, re.S)
    assert snippet is not None
    script = (snippet.group(1).replace("carrier-a", stack.trunk)
              .replace("order-42", correlation_id)
              .replace("+15550123", f"sip:+15550123@{stack.proxy}")
              .replace("$(uuidgen)", "$(cat /proc/sys/kernel/random/uuid)")
              .replace("redis-cli LPUSH", f"redis-cli -p {stack.redis_server.port} LPUSH"))
    subprocess.run(["bash", "-euc", script], check=True, capture_output=True, timeout=10)


def message(stack: Stack, correlation_id: str, **fields: Any) -> dict[str, Any]:
    return {"version": 1, "correlation_id": correlation_id, "trunk": stack.trunk,
            "to": f"sip:+15550123@{stack.proxy}", **fields}


def drained(stack: Stack) -> bool:
    """Every message taken and settled: none queued, none in a worker's in-flight list
    (workers/celery/redis_intake.py), none in kombu's `unacked` hash (Celery tasks)."""
    queue = dial_message_queue_name(stack.trunk)
    return (stack.redis.llen(queue) == 0 and not stack.redis.hlen("unacked")
            and inflight_entries(stack.redis, stack.settings, stack.trunk) == 0)


def legs_by_correlation(stack: Stack) -> dict[str, list[tuple[str, str]]]:
    legs: dict[str, list[tuple[str, str]]] = {}
    for leg_id, correlation_id, state in stack.rows(
            "SELECT id::text, correlation_id, state FROM legs"):
        legs.setdefault(correlation_id, []).append((leg_id, state))
    return legs


def test_raw_json_message_makes_a_call_and_one_cdr_expired_and_bad_ones_dial_nothing(
    stack: Stack,
) -> None:
    shell = shutil.which("redis-cli") is not None and shutil.which("jq") is not None
    carrier = stack.sipp("uas_answer_remote_bye.xml", 1 + shell, hold_ms=300,
                         reason_cause="16")
    stack.configure_trunk(carrier)
    stack.start_worker("w1@msg")
    if shell:
        publish_with_the_documented_shell_snippet(stack, "shell-1")
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    publish(stack, message(stack, "raw-1", caller_user="+15550199", campaign_id="spring"))
    publish(stack, message(stack, "late-1", not_after=past))
    publish(stack, message(stack, "bad-1", rtp_port="x", ring_timeout=-1))
    publish(stack, {"version": 1, "trunk": stack.trunk, "to": "sip:a@b", "colour": "red"})
    publish(stack, b"{not json")
    publish(stack, message(stack, "wrong-trunk", trunk="elsewhere"))

    good = {"raw-1", "late-1"} | ({"shell-1"} if shell else set())
    wait_for(lambda: good <= set(legs_by_correlation(stack)), 30, "legs")
    raw_leg = legs_by_correlation(stack)["raw-1"][0][0]
    late_leg = legs_by_correlation(stack)["late-1"][0][0]
    shell_legs = [legs_by_correlation(stack)["shell-1"][0][0]] if shell else []
    cdrs = stack.wait_cdrs([raw_leg, late_leg, *shell_legs], timeout=30)
    assert cdrs[raw_leg][1] == "raw-1" and cdrs[raw_leg][2] == "answered"
    assert all(cdrs[leg][2] == "answered" for leg in shell_legs)
    assert cdrs[late_leg][2] == "failed" and "not_after" in cdrs[late_leg][5]
    # the expired one was not dialled
    assert carrier.wait(timeout=30).successful_calls == 1 + shell
    wait_for(lambda: drained(stack), 30, "the dial queue to drain")

    legs = legs_by_correlation(stack)
    assert set(legs) == good  # nothing stored for the bad messages
    assert legs["late-1"] == [(late_leg, "failed")]
    events = stack.stream_events()
    by_leg = events_by_leg(events)
    assert_complete_event_history(by_leg, [raw_leg])
    assert [e.state for e in by_leg[raw_leg]][-1] == "ended"
    assert [e.state for e in by_leg[late_leg]] == ["expired"]
    rejected = [event for event in events if event.state == "rejected"]
    reasons = {event.correlation_id: event.reason for event in rejected}
    assert len(rejected) == 4, reasons
    assert "rtp_port" in reasons["bad-1"] and "ring_timeout" in reasons["bad-1"]
    assert "trunk" in reasons["wrong-trunk"]
    generated = [cid for cid in reasons if cid.startswith("rejected-")]
    assert len(generated) == 2  # no correlation_id: a generated rejection id
    assert any("correlation_id: missing" in reasons[cid] and "colour: unknown field"
               in reasons[cid] for cid in generated)
    dead = stack.redis.xrange(dead_letter_stream(stack.settings, stack.trunk))
    raws = {fields[b"raw"] for _, fields in dead}
    assert b"{not json" in raws and len(dead) == 4
    assert any(b"rtp_port" in fields[b"why"] for _, fields in dead)


def test_hundred_messages_with_repeats_dial_each_correlation_id_once(stack: Stack) -> None:
    calls = 100
    carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=200, reason_cause="16")
    stack.configure_trunk(carrier)
    ids = [f"dup-{index}-{uuid.uuid4().hex[:6]}" for index in range(calls)]
    for index, correlation_id in enumerate(ids):
        publish(stack, message(stack, correlation_id))
        if index % 3 == 0:  # a scheduler that published twice
            publish(stack, message(stack, correlation_id))
    stack.start_worker("w1@dup")
    for correlation_id in ids[:20]:  # redelivered while the legs live or after they ended
        publish(stack, message(stack, correlation_id))

    wait_for(lambda: len(legs_by_correlation(stack)) == calls, 60, "all legs stored")
    leg_ids = [leg for legs in legs_by_correlation(stack).values() for leg, _ in legs]
    assert len(leg_ids) == calls
    stack.wait_cdrs(leg_ids, timeout=90)
    for correlation_id in ids[20:40]:  # and again after every leg has ended
        publish(stack, message(stack, correlation_id))
    wait_for(lambda: drained(stack), 30, "the dial queue to drain")

    result = carrier.wait(timeout=30)
    assert result.stat("IncomingCall") == calls, result.explain()
    cdr_count = Counter(row[0] for row in stack.rows("SELECT correlation_id FROM cdrs"))
    assert cdr_count == Counter(ids)
    settled = stack.settled_events(leg_ids)
    terminal = Counter(event.correlation_id for legs in settled.values()
                       for event in legs if event.terminal)
    assert terminal == Counter(ids)
    assert_complete_event_history(settled, leg_ids)


def test_a_dead_workers_inflight_message_is_dialled_once_a_live_workers_is_left(
    stack: Stack,
) -> None:
    """What a worker killed with SIGKILL leaves in its in-flight list (workers/celery/
    redis_intake.py): the next worker puts it back on the queue and dials it, once."""
    carrier = stack.sipp("uas_answer_remote_bye.xml", 1, hold_ms=200, reason_cause="16")
    stack.configure_trunk(carrier)
    queue = dial_message_queue_name(stack.trunk)
    dead, live = "gone@msg#old", "alive@msg#up"
    stack.redis.lpush(inflight_key(stack.settings, stack.trunk, dead),
                      envelope(queue, json.dumps(message(stack, "orphan-1")).encode()))
    live_entry = envelope(queue, json.dumps(message(stack, "held-1")).encode())
    stack.redis.lpush(inflight_key(stack.settings, stack.trunk, live), live_entry)
    stack.redis.sadd(owners_key(stack.settings, stack.trunk), dead, live)
    stack.redis.set(heartbeat_key(stack.settings, "gone@msg"), json.dumps({"instance": "new"}))
    stack.redis.set(heartbeat_key(stack.settings, "alive@msg"), json.dumps({"instance": "up"}))
    stack.start_worker("w1@orphan")

    wait_for(lambda: "orphan-1" in legs_by_correlation(stack), 30, "the orphan's leg")
    leg = legs_by_correlation(stack)["orphan-1"][0][0]
    assert stack.wait_cdrs([leg], timeout=30)[leg][2] == "answered"
    assert carrier.wait(timeout=30).successful_calls == 1
    assert list(legs_by_correlation(stack)) == ["orphan-1"]
    assert stack.redis.lrange(inflight_key(stack.settings, stack.trunk, live), 0, -1) == [
        live_entry]
    assert not stack.redis.exists(inflight_key(stack.settings, stack.trunk, dead))
    assert stack.redis.llen(queue) == 0


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def test_raw_json_message_over_rabbitmq_makes_a_call(tmp_path: Path, database_url: str) -> None:
    """With RabbitMQ as the broker, the message is the JSON itself on the default exchange."""
    from kombu.connection import Connection  # a plain AMQP client: no Celery, no outbound code

    trunk = f"rmq{uuid.uuid4().hex[:8]}"  # the broker is shared: queues of our own
    stack = Stack(tmp_path, database_url, trunk=trunk)
    try:
        stack.env["OUTBOUND_BROKER_URL"] = RABBITMQ_URL
        carrier = stack.sipp("uas_answer_remote_bye.xml", 1, hold_ms=200, reason_cause="16")
        stack.configure_trunk(carrier)
        stack.start_worker("w1@rmq")
        queue = dial_message_queue_name(trunk)
        body = json.dumps(message(stack, "amqp-1")).encode()
        with Connection(RABBITMQ_URL) as connection:  # type: ignore[no-untyped-call]
            channel = connection.channel()
            channel.queue_declare(
                queue, durable=True, auto_delete=False)  # as the worker declares it
            channel.basic_publish(
                channel.prepare_message(body, content_type="application/json"),
                exchange="", routing_key=queue,
            )
        wait_for(lambda: "amqp-1" in legs_by_correlation(stack), 30, "the leg")
        leg = legs_by_correlation(stack)["amqp-1"][0][0]
        cdrs = stack.wait_cdrs([leg], timeout=30)
        assert cdrs[leg][2] == "answered"
        assert carrier.wait(timeout=30).successful_calls == 1
        with Connection(RABBITMQ_URL) as connection:  # type: ignore[no-untyped-call]
            connection.channel().queue_delete(queue)
    finally:
        stack.close()
