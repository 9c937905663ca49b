"""OPTIONS health checks against SIPp: up while it answers, down after N misses once it is
stopped, up again after M answers once it is back on the same port; shared through Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from sipstack.health import HealthRule, TrunkHealth
from tests.sipp.harness import Sipp, free_ports
from tests.waiting import eventually
from workers.config.settings import Settings, TrunkConfig
from workers.coordination.health import HealthPinger, TrunkHealthBoard


def test_a_trunk_goes_down_when_sipp_stops_and_up_when_it_is_back(
    tmp_path: Path, redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    port = free_ports(1)
    trunk = TrunkConfig(name="carrier", proxy=f"127.0.0.1:{port}")

    started: list[Sipp] = []

    def sipp(run: int) -> Sipp:
        process = Sipp("uas_options.xml", port, "udp", tmp_path / f"run{run}", calls=10_000)
        started.append(process)
        return process.start()

    rule = HealthRule(down_after=2, up_after=2)
    board = TrunkHealthBoard(redis_client, redis_settings, rule)
    other_worker = TrunkHealthBoard(redis_client, redis_settings, rule)
    changes: list[tuple[str, bool, int, int, str | None]] = []
    pinger = HealthPinger(
        board, [trunk], interval=0.05, timeout=0.3, bind_host="127.0.0.1",
        on_change=lambda name, health, result: changes.append(
            (name, health.up, health.misses, health.successes, result.error)
        ),
    )
    first = sipp(1)

    async def scenario() -> None:
        pinger.start()
        try:
            answered = await eventually(
                lambda: (s := board.state("carrier")).successes >= 2 and s, "two answered pings",
                timeout=10,
            )
            assert isinstance(answered, TrunkHealth) and answered.up and answered.misses == 0
            assert other_worker.is_up("carrier")

            await asyncio.to_thread(first.stop)
            await eventually(lambda: changes, "the trunk to go down", timeout=10)
            # it went down on the second consecutive miss, not before, for every worker
            assert changes == [("carrier", False, 2, 0, "no response in 0.3 s")]
            assert not other_worker.is_up("carrier")

            await asyncio.to_thread(sipp, 2)
            await eventually(lambda: len(changes) > 1, "the trunk to come up", timeout=10)
            assert changes[1:] == [("carrier", True, 0, 2, None)]
            assert other_worker.is_up("carrier")
            assert board.last_up("carrier") == 1.0
        finally:
            await pinger.stop()

    try:
        asyncio.run(scenario())
    finally:
        for process in started:
            process.stop()


def test_a_proxy_answering_503_is_down(
    tmp_path: Path, redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    port = free_ports(1)
    sipp = Sipp("uas_options_503.xml", port, "udp", tmp_path, calls=10_000).start()
    board = TrunkHealthBoard(redis_client, redis_settings, HealthRule(down_after=2))
    pinger = HealthPinger(board, [TrunkConfig(name="busy", proxy=f"127.0.0.1:{port}")],
                          interval=0.05, timeout=2.0, bind_host="127.0.0.1")

    async def scenario() -> list[int | None]:
        statuses = [result.status for result in await pinger.ping_once()]
        assert board.is_up("busy")  # one miss
        statuses += [result.status for result in await pinger.ping_once()]
        return statuses

    try:
        assert asyncio.run(scenario()) == [503, 503]
        assert not board.is_up("busy") and board.state("busy").misses == 2
    finally:
        sipp.stop()
