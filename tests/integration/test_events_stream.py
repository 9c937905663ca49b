"""Event entries, the publisher's outbox fallback and the reader, on real Redis servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.workers_harness import RedisServer
from workers.config.settings import Settings
from workers.events.stream import (
    EventPublisher,
    EventReader,
    MemoryOutbox,
    StreamEvent,
    StreamWriter,
)

pytestmark = pytest.mark.services


def event(leg: str, seq: int, state: str = "provisional", trunk: str = "t1") -> StreamEvent:
    return StreamEvent(
        trunk=trunk, leg_id=leg, seq=seq, state=state, call_id=f"{leg}@h",
        correlation_id=f"corr-{leg}", scenario="campaign",
        status_code=180 if state == "provisional" else None, reason="Ringing",
        at=1_700_000_000.25 + seq,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    instance = RedisServer().start()
    yield instance
    instance.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(key_prefix=f"ev-{uuid.uuid4().hex[:8]}", events_maxlen=1000)


def client_for(server: RedisServer) -> redis.Redis[Any]:
    return redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)


def stream_ids(client: redis.Redis[Any], settings: Settings, trunk: str = "t1") -> list[str]:
    entries = client.xrange(settings.events_stream(trunk))
    return [fields[b"event_id"].decode() for _, fields in entries]


def test_entry_fields_round_trip() -> None:
    original = event("leg-1", 3)
    fields = original.fields()
    assert fields["event_id"] == "leg-1:3"
    assert fields["at"] == "2023-11-14T22:13:23.250000Z"
    assert fields["status_code"] == "180"
    assert set(fields) == {
        "event_id", "seq", "state", "call_id", "correlation_id", "scenario", "trunk",
        "status_code", "reason", "at",
    }
    assert StreamEvent.from_fields(fields) == original
    ended = event("leg-1", 4, "ended")
    assert ended.terminal and ended.fields()["status_code"] == ""
    assert StreamEvent.from_json(ended.to_json()) == ended


def test_publish_goes_to_each_trunk_stream_in_order(
    server: RedisServer, settings: Settings
) -> None:
    client = client_for(server)
    outbox = MemoryOutbox()
    publisher = EventPublisher(StreamWriter(client, settings), outbox)
    batch = [event("a", 1, "invited"), event("b", 1, "invited", trunk="t2"), event("a", 2)]
    assert publisher.publish(list(zip(outbox.add(batch), batch, strict=True)))
    assert stream_ids(client, settings) == ["a:1", "a:2"]
    assert stream_ids(client, settings, "t2") == ["b:1"]
    assert outbox.pending() == 0


def test_events_wait_in_the_outbox_while_redis_is_down_and_keep_their_order(
    settings: Settings,
) -> None:
    server = RedisServer().start()
    try:
        client = client_for(server)
        outbox = MemoryOutbox()
        naps: list[float] = []
        publisher = EventPublisher(StreamWriter(client, settings), outbox, sleep=naps.append)

        def publish(*events: StreamEvent) -> bool:
            return publisher.publish(list(zip(outbox.add(events), events, strict=True)))

        assert publish(event("a", 1, "invited"))
        server.stop()
        assert not publish(event("a", 2))
        assert publisher.backlogged and len(naps) == 2  # bounded: 3 attempts, 2 waits
        assert not publish(event("a", 3, "established"), event("b", 1, "invited"))
        assert outbox.pending() == 3
        server.start()  # a restarted Redis is empty: the stream starts again
        assert publish(event("a", 4, "ended"))
        assert not publisher.backlogged and outbox.pending() == 0
        assert stream_ids(client, settings) == ["a:2", "a:3", "b:1", "a:4"]
    finally:
        server.close()


def test_reader_follows_from_the_end_and_groups_ack(
    server: RedisServer, settings: Settings
) -> None:
    client = client_for(server)
    writer = StreamWriter(client, settings)
    writer.write([event("old", 1, "invited")])
    tail = EventReader(client, settings, ["t1"], from_start=False)
    assert tail.read(block_ms=10) == []
    writer.write([event("new", 1, "invited"), event("new", 2)])
    assert [item.event.event_id for item in tail.read(block_ms=10)] == ["new:1", "new:2"]

    group = EventReader(client, settings, ["t1"], group="billing", consumer="c1")
    first = group.read(block_ms=10)
    assert [item.event.event_id for item in first] == ["old:1", "new:1", "new:2"]
    group.ack(first[:1])
    # another consumer of the group takes over what c1 read and never acknowledged
    other = EventReader(client, settings, ["t1"], group="billing", consumer="c2")
    claimed = other.pending_claim(min_idle_ms=0)
    assert [item.event.event_id for item in claimed] == ["new:1", "new:2"]
    other.ack(claimed)
    # types-redis leaves Redis.xpending unannotated
    pending = client.xpending(settings.events_stream("t1"), "billing")  # type: ignore[no-untyped-call]
    assert pending["pending"] == 0


def test_group_reader_recreates_its_group_after_a_redis_restart(settings: Settings) -> None:
    server = RedisServer().start()
    try:
        client = client_for(server)
        writer = StreamWriter(client, settings)
        reader = EventReader(client, settings, ["t1"], group="g")
        writer.write([event("a", 1, "invited")])
        assert [i.event.event_id for i in reader.read(block_ms=10)] == ["a:1"]
        server.stop()
        server.start()
        assert reader.read(block_ms=10) == []  # NOGROUP: the group is created again
        writer.write([event("a", 2)])
        assert [i.event.event_id for i in reader.read(block_ms=10)] == ["a:2"]
    finally:
        server.close()
