"""The Redis intake of the JSON dial queue against a real Redis: batches moved atomically into
the worker's in-flight list and settled in one transaction (taken ones leave, put-back ones
return to the consuming end), dead workers' in-flight lists restored once and live ones left
alone (at start and on each recovery round, fake clock), kombu envelopes and bare bodies
decoded, garbage, a failing batch and an unreachable broker survived."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from tests.sipp.harness import free_ports
from tests.workers_harness import wait_for
from workers.celery.redis_intake import RedisIntake, decode_entry, inflight_entries
from workers.config.settings import Settings
from workers.coordination.recovery import OwnerWatch, heartbeat_key
from workers.runtime.claims import Settle

pytestmark = pytest.mark.services

TRUNK = "intake-t"


def envelope(body: bytes, *, base64_body: bool = False) -> bytes:
    return json.dumps({
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": {},
        "properties": {"delivery_tag": "t1", "body_encoding": "base64" if base64_body
                       else "utf-8", "delivery_info": {"exchange": "", "routing_key": "q"}},
    }).encode()


class Taker:
    """A take_batch that records what it got and answers with the verdicts it is given."""

    def __init__(self, verdict: Settle = Settle.ACK) -> None:
        self.batches: list[list[bytes]] = []
        self.verdict = verdict
        self.verdicts: list[Settle] | None = None
        self.fail_next = False
        self.lock = threading.Lock()
        self.on_take: Any = None

    def __call__(self, raws: Sequence[bytes], enqueued_at: float) -> Sequence[Settle]:
        with self.lock:
            self.batches.append(list(raws))
            if self.on_take is not None:
                self.on_take()
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("PostgreSQL went away")
            return self.verdicts or [self.verdict] * len(raws)

    def taken(self) -> list[bytes]:
        with self.lock:
            return [raw for batch in self.batches for raw in batch]


def make_intake(client: redis.Redis[Any], settings: Settings, taker: Taker, *,
                owner: str = "w1#me", batch_size: int = 10) -> RedisIntake:
    return RedisIntake(client, settings, trunk=TRUNK, queue=settings.key("queue"), owner=owner,
                       take_batch=taker, dead=OwnerWatch(client, settings).dead,
                       batch_size=batch_size, block_timeout=0.1, recover_every=0.2)


def beat(client: redis.Redis[Any], settings: Settings, node: str, instance: str) -> None:
    client.set(heartbeat_key(settings, node), json.dumps({"instance": instance}), ex=30)


def test_a_batch_is_moved_whole_then_taken_ones_leave_and_put_back_ones_return_in_order(
    redis_client: redis.Redis[Any], redis_settings: Settings,
) -> None:
    taker = Taker()
    intake = make_intake(redis_client, redis_settings, taker, batch_size=4)
    bodies = [json.dumps({"n": n}).encode() for n in range(6)]
    for body in bodies:
        redis_client.lpush(intake.queue, body)  # what kombu's producer does
    seen: list[tuple[int, int]] = []
    taker.on_take = lambda: seen.append((redis_client.llen(intake.queue),
                                         redis_client.llen(intake.inflight)))
    verdicts = [Settle.ACK, Settle.REQUEUE, Settle.ACK, Settle.REQUEUE]
    taker.verdicts = verdicts

    assert intake.run_once() == verdicts
    assert taker.batches == [bodies[:4]]  # oldest first, one batch of batch_size
    assert seen == [(2, 4)]  # all four in the in-flight list while being taken
    assert redis_client.llen(intake.inflight) == 0
    # the two put back are at the consuming (right) end again, in their order
    assert redis_client.lrange(intake.queue, 0, -1) == [bodies[5], bodies[4], bodies[3],
                                                        bodies[1]]


def test_a_dead_workers_inflight_list_is_put_back_and_taken_once_a_live_ones_is_not(
    redis_client: redis.Redis[Any], redis_settings: Settings,
) -> None:
    taker = Taker()
    intake = make_intake(redis_client, redis_settings, taker)
    dead_list, live_list = intake.inflight_key("w2#old"), intake.inflight_key("w3#up")
    redis_client.lpush(dead_list, b'{"n": "a"}', b'{"n": "b"}')
    redis_client.lpush(live_list, b'{"n": "live"}')
    redis_client.sadd(intake.owners_key, "w2#old", "w3#up")
    beat(redis_client, redis_settings, "w2", "new")  # w2 restarted as another instance
    beat(redis_client, redis_settings, "w3", "up")

    assert intake.recover() == 2
    assert redis_client.llen(dead_list) == 0
    assert redis_client.smembers(intake.owners_key) == {b"w3#up"}
    assert intake.run_once() == [Settle.ACK, Settle.ACK]
    assert intake.run_once() == []
    assert taker.taken() == [b'{"n": "a"}', b'{"n": "b"}']  # oldest first, once each
    assert intake.recover() == 0
    assert redis_client.lrange(live_list, 0, -1) == [b'{"n": "live"}']
    assert inflight_entries(redis_client, redis_settings, TRUNK) == 1


def test_envelopes_and_bare_bodies_decode_and_garbage_is_passed_on_raw() -> None:
    body = b'{"version": 1, "correlation_id": "c1"}'
    assert decode_entry(envelope(body)) == body
    assert decode_entry(envelope(body, base64_body=True)) == body
    assert decode_entry(body) == body
    for garbage in (b"\xff\xfe not json", b"{not json", b"[1, 2]", b'{"body": 3, "properties": {}}',
                    b'{"body": "!!", "properties": {"body_encoding": "base64"}}'):
        assert decode_entry(garbage) == garbage


def test_the_thread_survives_garbage_and_a_failing_batch_and_puts_back_its_own_on_stop(
    redis_client: redis.Redis[Any], redis_settings: Settings,
) -> None:
    taker = Taker()
    taker.fail_next = True
    intake = make_intake(redis_client, redis_settings, taker, batch_size=3)
    entries = [envelope(b'{"n": 1}', base64_body=True), b"\xff garbage", envelope(b'{"n": 2}')]
    redis_client.lpush(intake.queue, *entries)
    intake.start()
    try:
        # the first batch raised: put back whole, then taken again and acknowledged
        wait_for(lambda: len(taker.batches) >= 2 and redis_client.llen(intake.queue) == 0
                 and redis_client.llen(intake.inflight) == 0, 10, "the batch taken twice")
        assert taker.batches[0] == taker.batches[1] == [b'{"n": 1}', b"\xff garbage",
                                                         b'{"n": 2}']
        assert redis_client.smembers(intake.owners_key) == {b"w1#me"}
    finally:
        intake.stop()
    # a batch moved but not settled when the worker stopped goes back to the queue
    redis_client.lpush(intake.inflight, b"untaken")
    redis_client.sadd(intake.owners_key, intake.owner)
    intake.stop()
    assert redis_client.lrange(intake.queue, 0, -1) == [b"untaken"]
    assert not redis_client.exists(intake.inflight)
    assert not redis_client.sismember(intake.owners_key, intake.owner)


def test_a_batch_size_below_one_is_refused(
    redis_client: redis.Redis[Any], redis_settings: Settings,
) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        make_intake(redis_client, redis_settings, Taker(), batch_size=0)


def test_the_running_intake_recovers_a_worker_that_died_after_it_started_on_its_next_round(
    redis_client: redis.Redis[Any], redis_settings: Settings,
) -> None:
    now = [0.0]
    taker = Taker()
    intake = RedisIntake(redis_client, redis_settings, trunk=TRUNK,
                         queue=redis_settings.key("queue"), owner="w1#me", take_batch=taker,
                         dead=OwnerWatch(redis_client, redis_settings).dead, batch_size=10,
                         block_timeout=0.1, recover_every=5.0, clock=lambda: now[0])
    intake.start()
    try:
        wait_for(lambda: redis_client.sismember(intake.owners_key, "w1#me"), 5, "registered")
        redis_client.lpush(intake.inflight_key("w2#old"), b'{"n": "orphan"}')
        redis_client.sadd(intake.owners_key, "w2#old")
        beat(redis_client, redis_settings, "w2", "new")
        now[0] = 4.9  # before the next round (due at 5.0) nothing moves it
        assert redis_client.llen(intake.inflight_key("w2#old")) == 1
        now[0] = 5.0
        wait_for(lambda: taker.taken() == [b'{"n": "orphan"}'], 5, "the orphan taken")
        assert not redis_client.exists(intake.inflight_key("w2#old"))
    finally:
        intake.stop()


def test_an_unreachable_broker_is_retried_with_a_growing_bounded_backoff_not_a_crash(
    redis_settings: Settings,
) -> None:
    nowhere: redis.Redis[Any] = redis.Redis(port=free_ports(1), socket_connect_timeout=0.5)
    taker = Taker()
    intake = make_intake(nowhere, redis_settings, taker)
    intake.start()
    try:
        wait_for(lambda: intake._backoff >= 0.4, 10, "the backoff to grow")
        assert intake._thread is not None and intake._thread.is_alive()
        assert taker.batches == []
    finally:
        intake.stop()  # logs that it could not put anything back; does not raise
