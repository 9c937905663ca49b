"""The shared trunk health board on the real Redis, driven by a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from sipstack.health import HealthRule, TrunkHealth
from tests.clock import FakeClock
from tests.sipp.harness import free_ports
from tests.waiting import eventually
from workers.config.settings import Settings, TrunkConfig
from workers.coordination.health import HealthPinger, TrunkHealthBoard
from workers.observability.pressure_metrics import register_pressure_gauges

pytestmark = pytest.mark.services


def test_misses_from_two_workers_count_in_one_run(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    rule = HealthRule(down_after=3, up_after=2)
    first = TrunkHealthBoard(redis_client, redis_settings, rule)
    second = TrunkHealthBoard(redis_client, redis_settings, rule)
    clock = FakeClock(1000.0)
    assert first.is_up("t") and first.state("t") == TrunkHealth()  # never pinged: up
    first.record("t", False, clock.advance(1))
    second.record("t", False, clock.advance(1))
    before, after = first.record("t", False, clock.advance(1))
    assert before.up and not after.up and after.since == 1003.0
    assert not second.is_up("t") and first.is_up("other")
    second.record("t", True, clock.advance(1))
    assert not first.is_up("t")
    _, back = first.record("t", True, clock.advance(1))
    assert back == TrunkHealth(up=True, misses=0, successes=2, since=1005.0, checked_at=1005.0)
    assert second.state("t") == back


def test_the_state_lapses_when_nobody_pings(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    board = TrunkHealthBoard(
        redis_client, redis_settings, HealthRule(down_after=1), stale_after=30.0
    )
    board.record("t", False, 1.0)
    assert not board.is_up("t")
    assert 29_000 < redis_client.pttl(board.key("t")) <= 30_000
    redis_client.delete(board.key("t"))  # what the expiry does
    assert board.is_up("t")


def test_the_up_gauge_reads_the_last_state(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    board = TrunkHealthBoard(redis_client, redis_settings, HealthRule(down_after=1))
    registry = CollectorRegistry()
    register_pressure_gauges(registry, "t", factor=lambda: 1.0,
                             up=lambda: board.last_up("t"))
    assert registry.get_sample_value("outbound_trunk_up", {"trunk": "t"}) == 1.0
    board.record("t", False, 1.0)
    assert registry.get_sample_value("outbound_trunk_up", {"trunk": "t"}) == 0.0


@pytest.mark.parametrize("stale_after", [0, -1.0, float("inf"), "30"])
def test_bad_stale_after_is_refused(
    redis_client: redis.Redis[Any], redis_settings: Settings, stale_after: Any
) -> None:
    with pytest.raises(ValueError, match="stale_after"):
        TrunkHealthBoard(redis_client, redis_settings, stale_after=stale_after)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"interval": 0}, "interval"), ({"timeout": -1}, "timeout"), ({"trunks": []}, "trunks"),
])
def test_the_pinger_refuses_bad_arguments_naming_them(
    redis_client: redis.Redis[Any], redis_settings: Settings, kwargs: dict[str, Any], name: str
) -> None:
    arguments: dict[str, Any] = {"trunks": [TrunkConfig(name="t", proxy="127.0.0.1:5060")]}
    arguments.update(kwargs)
    trunks = arguments.pop("trunks")
    with pytest.raises(ValueError, match=name):
        HealthPinger(TrunkHealthBoard(redis_client, redis_settings), trunks, **arguments)


def test_the_pinger_survives_rounds_that_fail_and_records_misses_when_redis_is_back(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    closed = free_ports(2)  # nothing listens on either: no Redis, no SIP proxy
    away: redis.Redis[Any] = redis.Redis(host="127.0.0.1", port=closed, socket_timeout=0.5)
    trunk = TrunkConfig(name="t", proxy=f"127.0.0.1:{closed + 1}")
    board = TrunkHealthBoard(away, redis_settings, HealthRule(down_after=1))
    pinger = HealthPinger(board, [trunk], interval=0.01, timeout=0.05, bind_host="127.0.0.1")

    async def scenario() -> None:
        pinger.start()
        try:
            await eventually(lambda: pinger.failed_rounds >= 2, "two failed rounds", timeout=10)
            assert pinger.rounds == 0
            pinger.board = TrunkHealthBoard(  # Redis is back
                redis_client, redis_settings, HealthRule(down_after=1)
            )
            await eventually(lambda: pinger.rounds >= 1, "a recorded round", timeout=10)
        finally:
            await pinger.stop()

    try:
        asyncio.run(scenario())
    finally:
        away.close()
    assert not TrunkHealthBoard(redis_client, redis_settings).is_up("t")
