"""Liveness and recovery pieces on the real Redis: heartbeats, dead-owner detection with a
fake clock, and the dialog state stored for crash recovery."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any, cast

import pytest
import redis

from sipstack.dialog import DialogSnapshot
from sipstack.transport import Transport
from workers.config.settings import Settings
from workers.coordination.recovery import (
    Heartbeat,
    OwnerWatch,
    WorkerNameInUse,
    dialog_columns,
    heartbeat_key,
    owner_id,
    recovery_cseq,
    snapshot_from_json,
    snapshot_to_json,
    split_owner,
)

pytestmark = pytest.mark.services


@pytest.fixture
def redis_settings() -> Settings:  # recovery needs a short heartbeat
    return Settings(key_prefix=f"test-{uuid.uuid4().hex[:12]}", heartbeat_ttl=1.5)


@pytest.fixture
def settings(redis_settings: Settings) -> Settings:
    return redis_settings


@pytest.fixture
def client(redis_client: redis.Redis[Any]) -> redis.Redis[Any]:
    return redis_client  # tests/redis_fixtures.py: a real Redis, this test's keys deleted after


def stored_json(client: redis.Redis[Any], key: str) -> dict[str, object]:
    """The JSON object stored at `key` (which must be there)."""
    raw = client.get(key)
    assert raw is not None, key
    return cast("dict[str, object]", json.loads(raw))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_owner_ids_carry_node_and_instance() -> None:
    owner = owner_id("outbound.t1@host-a", "abc123")
    assert owner == "outbound.t1@host-a#abc123"
    assert split_owner(owner) == ("outbound.t1@host-a", "abc123")
    assert split_owner("legacy-name") == ("legacy-name", "")


def test_an_owner_whose_node_runs_another_instance_is_dead_at_once(
    client: redis.Redis[Any], settings: Settings
) -> None:
    Heartbeat(client, settings, node="n1", instance="new", trunk="t").beat()
    watch = OwnerWatch(client, settings, clock=FakeClock())
    assert watch.dead(["n1#old", "n1#new"]) == ["n1#old"]


def test_a_missing_heartbeat_counts_only_after_a_whole_ttl(
    client: redis.Redis[Any], settings: Settings
) -> None:
    clock = FakeClock()
    watch = OwnerWatch(client, settings, clock=clock)
    assert watch.dead(["gone#1"]) == []  # first seen missing: maybe Redis just restarted
    clock.now += settings.heartbeat_ttl - 0.1
    assert watch.dead(["gone#1"]) == []
    clock.now += 0.2
    assert watch.dead(["gone#1"]) == ["gone#1"]


def test_a_heartbeat_that_comes_back_resets_the_count(
    client: redis.Redis[Any], settings: Settings
) -> None:
    clock = FakeClock()
    watch = OwnerWatch(client, settings, clock=clock)
    assert watch.dead(["n2#i"]) == []
    Heartbeat(client, settings, node="n2", instance="i", trunk="t").beat()
    clock.now += 10
    assert watch.dead(["n2#i"]) == []
    client.delete(heartbeat_key(settings, "n2"))
    clock.now += 1
    assert watch.dead(["n2#i"]) == []  # missing again: the count starts over


def test_heartbeat_key_expires_and_is_removed_on_clean_stop(
    client: redis.Redis[Any], settings: Settings
) -> None:
    beat = Heartbeat(client, settings, node="n3", instance="i3", trunk="t1")
    beat.take_over()
    key = heartbeat_key(settings, "n3")
    stored = stored_json(client, key)
    assert stored["instance"] == "i3" and stored["trunk"] == "t1"
    assert 0 < client.pttl(key) <= settings.heartbeat_ttl * 1000
    beat.stop(remove=True)
    assert not client.exists(key)


def test_a_second_worker_with_the_same_name_is_refused(
    client: redis.Redis[Any], settings: Settings
) -> None:
    running = Heartbeat(client, settings, node="dup", instance="first", trunk="t").start()
    running.beat()
    try:
        with pytest.raises(WorkerNameInUse, match="'dup' is already running"):
            Heartbeat(client, settings, node="dup", instance="second", trunk="t").take_over()
    finally:
        running.stop()


def test_a_dead_predecessor_with_the_same_name_is_taken_over(
    client: redis.Redis[Any], settings: Settings
) -> None:
    Heartbeat(client, settings, node="again", instance="dead", trunk="t").beat()  # no thread
    successor = Heartbeat(client, settings, node="again", instance="alive", trunk="t")
    done = threading.Event()
    successor_error: list[BaseException] = []

    def take() -> None:
        try:
            successor.take_over()
        except BaseException as error:  # pragma: no cover - reported below
            successor_error.append(error)
        done.set()

    threading.Thread(target=take).start()
    assert done.wait(10)
    assert not successor_error
    assert stored_json(client, heartbeat_key(settings, "again"))["instance"] == "alive"


def snapshot(**changes: Any) -> DialogSnapshot:
    values: dict[str, Any] = {
        "call_id": "abc@10.0.0.1", "local_tag": "lt", "remote_tag": "rt", "local_cseq": 3,
        "remote_target": "sip:uas@[2001:db8::1]:5070", "route_set": ("<sip:p1;lr>",),
        "transport": Transport.UDP, "peer_address": ("2001:db8::1", 5070),
        "from_header": '"ACME" <sip:+1555@10.0.0.1>;tag=lt', "to_header": "<sip:+1666@c>;tag=rt",
        "invite_branch": "z9hG4bKx", "invite_via": "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx",
        "invite_cseq": 1, "request_uri": "sip:+1666@c", "state": "established",
        "correlation_id": "c-1", "scenario": "campaign", "trunk": "t1",
        "started_at": 1000.0, "answered_at": 1002.0,
    }
    values.update(changes)
    return DialogSnapshot(**values)


def test_dialog_state_survives_json_storage() -> None:
    original = snapshot()
    stored = json.loads(json.dumps(snapshot_to_json(original)))
    assert snapshot_from_json(stored) == original
    columns = dialog_columns(original)
    assert columns["peer_addr"] == "[2001:db8::1]:5070"
    assert columns["route_set"] == ["<sip:p1;lr>"]


def test_recovery_raises_cseq_past_refreshes_sent_since_the_snapshot() -> None:
    fresh = recovery_cseq(snapshot(local_cseq=3, answered_at=1000.0), now=1001.0)
    assert fresh.local_cseq > 3
    hour_later = recovery_cseq(snapshot(local_cseq=3, answered_at=1000.0), now=4600.0)
    assert hour_later.local_cseq >= 3 + 3600 // 45  # a refresh every 45 s at the least
