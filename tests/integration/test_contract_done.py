"""Issue 11's done-when, on Redis and on RabbitMQ: a scheduler that knows only the broker URL and
docs/dial-message.schema.json places 1,000 calls with duplicates, a worker is killed with
SIGKILL in the middle and restarted, and every correlation_id ends with exactly one CDR and one
terminal event, was dialled at most once, and the dial queues drain with nothing stranded.

The scheduler side uses no outbound code: plain JSON bodies built from the schema's fields,
validated with jsonschema, put on `dial.<trunk>.json` (the name docs/dial-message.md gives)
with redis-py's LPUSH of kombu's envelope, or an AMQP publish with publisher confirms.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import jsonschema
import pytest
from kombu.connection import Connection

from tests.rabbitmq import RabbitVhost, rabbitmq_available, rabbitmqctl
from tests.sipp.harness import free_ports, requires_sipp
from tests.worker_stack import TERMINAL, Stack
from tests.workers_harness import wait_for
from workers.celery.redis_intake import inflight_entries

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" /
                     "dial-message.schema.json").read_text())
CALLS = 1000
TWICE_AT_ONCE = 50  # published twice back to back
TWICE_AFTER_END = 50  # published again once their leg has ended


def queue_names(trunk: str) -> tuple[str, str]:
    """The JSON dial queue docs/dial-message.md names, and the leg-id task queue the worker
    puts limit-deferred legs on (both must drain)."""
    return f"dial.{trunk}.json", f"dial.{trunk}"


class Scheduler(Protocol):
    def publish(self, message: dict[str, Any]) -> None: ...
    def drained(self) -> bool: ...
    def close(self) -> None: ...


class RedisScheduler:
    """LPUSH of kombu's envelope around the JSON body (docs/dial-message.md, Redis)."""

    def __init__(self, stack: Stack) -> None:
        self.redis = stack.redis
        self.stack = stack
        self.queue, self.task_queue = queue_names(stack.trunk)

    def publish(self, message: dict[str, Any]) -> None:
        self.redis.lpush(self.queue, json.dumps({
            "body": json.dumps(message), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": {},
            "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "utf-8",
                           "delivery_info": {"exchange": "", "routing_key": self.queue}},
        }))

    def drained(self) -> bool:
        # a worker keeps a taken, unsettled JSON message in its in-flight list
        # (workers/celery/redis_intake.py), kombu a Celery task in the `unacked` hash
        return (self.redis.llen(self.queue) == 0 and self.redis.llen(self.task_queue) == 0
                and self.redis.hlen("unacked") == 0
                and inflight_entries(self.redis, self.stack.settings, self.stack.trunk) == 0)

    def close(self) -> None:
        pass


class AmqpScheduler:
    """The JSON itself on the default exchange, persistent, with publisher confirms."""

    def __init__(self, url: str, vhost: RabbitVhost, trunk: str) -> None:
        self.vhost = vhost
        self.queue, self.task_queue = queue_names(trunk)
        self.connection = Connection(  # type: ignore[no-untyped-call]
            url, transport_options={"confirm_publish": True})
        self.channel = self.connection.channel()  # type: ignore[no-untyped-call]
        # declared exactly as the worker declares it, so publishing before it runs is safe
        self.channel.queue_declare(self.queue, durable=True, auto_delete=False)

    def publish(self, message: dict[str, Any]) -> None:
        self.channel.basic_publish(
            self.channel.prepare_message(json.dumps(message).encode(),
                                         content_type="application/json",
                                         properties={"delivery_mode": 2}),
            exchange="", routing_key=self.queue,
        )

    def drained(self) -> bool:
        out = rabbitmqctl("list_queues", "-p", self.vhost.name, "--no-table-headers",
                          "--silent", "name", "messages_ready", "messages_unacknowledged")
        counts = {parts[0]: int(parts[1] or 0) + int(parts[2] or 0)
                  for parts in (line.split("\t") for line in out.splitlines())
                  if len(parts) >= 3}
        # a dial the CPS refused waits in Celery's delayed-delivery queues (celery_delayed_N)
        delayed = sum(n for name, n in counts.items() if name.startswith("celery_delayed_"))
        return counts.get(self.queue, 0) == 0 and counts.get(self.task_queue, 0) == 0 \
            and delayed == 0

    def close(self) -> None:
        self.connection.close()  # type: ignore[no-untyped-call]


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[RabbitVhost | None]:
    if request.param == "redis":
        yield None
        return
    if not rabbitmq_available():
        pytest.skip("needs RabbitMQ on 127.0.0.1:5672 and rabbitmqctl")
    vhost = RabbitVhost().start()
    try:
        yield vhost
    finally:
        vhost.close()


def invites_by_user(messages_log: str) -> dict[str, set[str]]:
    """Request-URI user -> the Call-IDs of the INVITEs SIPp received for it (a retransmission
    keeps its Call-ID; a second dial of the same person would bring a new one)."""
    calls: dict[str, set[str]] = defaultdict(set)
    for block in re.split(r"^-{10,} \d{4}-\d\d-\d\d [^\n]*\n", messages_log, flags=re.M):
        if "message received" not in block.split("\n", 1)[0]:
            continue
        body = block.split("\n\n", 1)[-1]
        start = re.match(r"\s*INVITE sips?:([^@;> ]+)@", body)
        call_id = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", body, re.M | re.I)
        if start and call_id:
            calls[start.group(1)].add(call_id.group(1))
    return calls


def _unacked_body(value: bytes) -> bytes:
    message = json.loads(value)[0]
    body = message["body"].encode()
    return base64.b64decode(body) if message["properties"].get("body_encoding") == "base64" \
        else body


def missing(stack: Stack, ids: list[str]) -> str:
    """What became of the correlation_ids without a CDR (for the failure message)."""
    with_cdr = {row[1] for row in stack.cdrs().values()}
    lost = [cid for cid in ids if cid not in with_cdr]
    legs = {row[0]: row[1:] for row in stack.rows(
        "SELECT correlation_id, state, owner_worker, created_at FROM legs")}
    unacked = [body for body in map(_unacked_body, stack.redis.hvals("unacked"))
               if any(cid.encode() in body for cid in lost)]
    lines = [f"{cid}: leg {legs.get(cid, 'not stored')}" for cid in lost[:20]]
    lines.append(f"{len(unacked)} of them in kombu's unacked hash: {unacked[:3]!r}"[:2000])
    lines.append(f"{inflight_entries(stack.redis, stack.settings, stack.trunk)} in workers' "
                 "in-flight lists")
    lines += [f"{key!r}: {stack.redis.llen(key)}" for key in stack.redis.keys("dial.*")
              if stack.redis.type(key) == b"list"]  # type: ignore[no-untyped-call]
    return "\n".join(lines)


def test_thousand_schema_messages_with_duplicates_and_a_kill_9_one_cdr_and_event_each(
    tmp_path: Path, database_url: str, broker: RabbitVhost | None,
) -> None:
    trunk = f"done{uuid.uuid4().hex[:6]}"
    stack = Stack(tmp_path, database_url, trunk=trunk, cps=60, max_concurrent=60,
                  broker_url=broker.url if broker is not None else None)
    scheduler: Scheduler | None = None
    try:
        carrier = stack.sipp("uas_answer_remote_bye.xml", CALLS, hold_ms=200,
                             reason_cause="16")
        stack.configure_trunk(carrier)
        scheduler = (RedisScheduler(stack) if broker is None
                     else AmqpScheduler(broker.url, broker, trunk))
        validator = jsonschema.Draft202012Validator(SCHEMA)
        ids = [f"order-{index}-{uuid.uuid4().hex[:6]}" for index in range(CALLS)]
        users = {cid: f"+1555{index:07d}" for index, cid in enumerate(ids)}

        def message(correlation_id: str) -> dict[str, Any]:
            body = {"version": 1, "correlation_id": correlation_id, "trunk": trunk,
                    "to": f"sip:{users[correlation_id]}@{stack.proxy}",
                    "campaign_id": "done-when", "ring_timeout": 20}
            validator.validate(body)
            return body

        for index, correlation_id in enumerate(ids):
            scheduler.publish(message(correlation_id))
            if index < TWICE_AT_ONCE:
                scheduler.publish(message(correlation_id))

        sip_port = free_ports(1)  # the restarted worker takes the same address back
        name = f"w1@{trunk}"
        victim = stack.start_worker(name, sip_port=sip_port)
        wait_for(lambda: len(stack.cdrs()) >= CALLS // 4, 120, "a quarter of the calls done")
        ended = {row[1] for row in stack.cdrs().values()}
        again = [cid for cid in ids[TWICE_AT_ONCE:] if cid in ended][:TWICE_AFTER_END]
        assert len(again) == TWICE_AFTER_END
        for correlation_id in again:
            scheduler.publish(message(correlation_id))
        wait_for(lambda: len(stack.cdrs()) >= CALLS * 2 // 5, 120, "two fifths of the calls")

        def live_calls() -> int:
            return int(stack.rows("SELECT count(*) FROM legs WHERE state NOT IN "
                                  "('failed', 'cancelled', 'ended', 'queued')")[0][0])

        # Claim batches take the trunk's CPS in bursts (the rest waits for its retry), so the
        # kill waits for a moment with a call up rather than reading one instant.
        live = wait_for(live_calls, 30, "a call live at the kill")
        victim.kill()  # SIGKILL: live calls, prefetched and queued messages
        assert live > 0, "no call was live at the kill"
        assert not scheduler.drained(), "no message was queued or unacknowledged at the kill"
        assert len(stack.cdrs()) < CALLS, "every call was done before the kill"
        stack.start_worker(name, sip_port=sip_port)

        try:
            wait_for(lambda: len(stack.cdrs()) >= CALLS, 180, f"{CALLS} CDRs")
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{missing(stack, ids)}") from None
        legs = stack.rows("SELECT id::text, correlation_id FROM legs")
        leg_ids = [row[0] for row in legs]
        assert Counter(row[1] for row in legs) == Counter(ids)  # one leg per correlation_id
        cdr_count = Counter(row[0] for row in stack.rows("SELECT correlation_id FROM cdrs"))
        assert cdr_count == Counter(ids)
        settled = stack.settled_events(leg_ids, timeout=60)
        terminal = Counter(event.correlation_id for history in settled.values()
                           for event in history if event.state in TERMINAL)
        assert terminal == Counter(ids)
        wait_for(scheduler.drained, 90, "the dial queues to drain (nothing ready or unacked)")

        carrier.stop()
        dialled = invites_by_user(carrier.result().messages)
        twice = {user: calls for user, calls in dialled.items() if len(calls) > 1}
        assert not twice, f"dialled more than once: {twice}"
        assert set(dialled) <= set(users.values())
        dispositions = Counter(row[2] for row in stack.cdrs().values())
        kind = "redis" if broker is None else "rabbitmq"
        print(f"{kind}: {len(dialled)} of {CALLS} dialled once, "
              f"CDR dispositions {dict(dispositions)}")
        # only legs the killed worker had not sent an INVITE for may go undialled
        assert len(dialled) >= CALLS - 100, dispositions
    finally:
        if scheduler is not None:
            scheduler.close()
        stack.close()


def test_cancel_before_any_worker_took_the_message_ends_it_undialled(
    tmp_path: Path, database_url: str, broker: RabbitVhost | None,
) -> None:
    from workers.coordination.control import cancel, hangup  # the scheduler's control call

    trunk = f"cxl{uuid.uuid4().hex[:6]}"
    stack = Stack(tmp_path, database_url, trunk=trunk,
                  broker_url=broker.url if broker is not None else None)
    scheduler: Scheduler | None = None
    try:
        carrier = stack.sipp("uas_answer_remote_bye.xml", 1, hold_ms=100, reason_cause="16")
        stack.configure_trunk(carrier)
        assert stack.client is not None
        scheduler = (RedisScheduler(stack) if broker is None
                     else AmqpScheduler(broker.url, broker, trunk))
        users = {"keep": "+15550001", "cancel": "+15550002", "hangup": "+15550003"}
        ids = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in users}
        for name, correlation_id in ids.items():
            body = {"version": 1, "correlation_id": correlation_id, "trunk": trunk,
                    "to": f"sip:{users[name]}@{stack.proxy}"}
            jsonschema.validate(body, SCHEMA)
            scheduler.publish(body)
            if name == "cancel":
                scheduler.publish(body)  # a repeat of a cancelled message stays undialled

        unknown = cancel(stack.client, correlation_id=ids["cancel"])  # no trunk: no note
        assert unknown.result == "unknown" and "trunk" in unknown.detail, unknown
        noted = cancel(stack.client, correlation_id=ids["cancel"], trunk=trunk)
        assert noted.result == "queued" and noted.ok, noted
        assert hangup(stack.client, correlation_id=ids["hangup"], trunk=trunk).result == "queued"

        stack.start_worker(f"w1@{trunk}")
        wait_for(lambda: len(stack.cdrs()) == 3, 60, "three CDRs")
        cdrs = {row[1]: row for row in stack.cdrs().values()}
        assert cdrs[ids["keep"]][2] == "answered"
        for name in ("cancel", "hangup"):
            assert cdrs[ids[name]][2] == "cancelled", cdrs[ids[name]]
            assert f"{name} requested before a worker took" in cdrs[ids[name]][5]
        settled = stack.settled_events(list(stack.cdrs()))
        states = {history[0].correlation_id: [e.state for e in history]
                  for history in settled.values()}
        assert states[ids["cancel"]] == ["cancelled"] == states[ids["hangup"]], states
        assert states[ids["keep"]][-1] == "ended"
        wait_for(scheduler.drained, 30, "the dial queues to drain")
        assert carrier.wait(timeout=30).successful_calls == 1
        dialled = invites_by_user(carrier.result().messages)
        assert set(dialled) == {users["keep"]}, dialled  # no INVITE for the cancelled ones
        again = cancel(stack.client, correlation_id=ids["cancel"], trunk=trunk)
        assert again.result == "finished", again
    finally:
        if scheduler is not None:
            scheduler.close()
        stack.close()
