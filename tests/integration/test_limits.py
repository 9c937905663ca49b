"""Shared trunk limits on the real Redis, driven by an explicit clock."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from workers.config.settings import Settings
from workers.coordination.limits import TrunkLimits

pytestmark = pytest.mark.services


@pytest.fixture
def settings(redis_settings: Settings) -> Settings:
    return redis_settings


@pytest.fixture
def client(redis_client: redis.Redis[Any]) -> redis.Redis[Any]:
    return redis_client  # tests/redis_fixtures.py: a real Redis, this test's keys deleted after


def test_cps_window_admits_limit_per_second_and_says_how_long_to_wait(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings)
    t0 = 1_000_000.0
    granted = [limits.take_call_slot("t", f"leg-{i}", 3, now=t0 + i * 0.1) for i in range(3)]
    assert all(permit.granted for permit in granted)
    refused = limits.take_call_slot("t", "leg-3", 3, now=t0 + 0.5)
    assert not refused.granted
    assert refused.retry_after == pytest.approx(0.5)  # the first start leaves the window at t0+1
    assert not limits.take_call_slot("t", "leg-3", 3, now=t0 + 0.99).granted
    assert limits.take_call_slot("t", "leg-3", 3, now=t0 + 1.0001).granted
    # other trunks have their own window
    assert limits.take_call_slot("other", "leg-x", 3, now=t0 + 0.5).granted


def test_cps_is_idempotent_per_leg(client: redis.Redis[Any], settings: Settings) -> None:
    limits = TrunkLimits(client, settings)
    t0 = 2_000_000.0
    assert limits.take_call_slot("t", "leg-a", 1, now=t0).granted
    # a redelivered message for the same leg does not take a second slot, nor is it refused
    assert limits.take_call_slot("t", "leg-a", 1, now=t0 + 0.2).granted
    assert not limits.take_call_slot("t", "leg-b", 1, now=t0 + 0.2).granted


def test_fractional_cps_spreads_starts(client: redis.Redis[Any], settings: Settings) -> None:
    limits = TrunkLimits(client, settings)
    t0 = 3_000_000.0
    assert limits.take_call_slot("t", "a", 0.5, now=t0).granted
    refused = limits.take_call_slot("t", "b", 0.5, now=t0 + 1.0)
    assert not refused.granted and refused.retry_after == pytest.approx(1.0)
    assert limits.take_call_slot("t", "b", 0.5, now=t0 + 2.01).granted


def test_two_limiters_share_one_window(client: redis.Redis[Any], settings: Settings) -> None:
    other_client: redis.Redis[Any] = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        first, second = TrunkLimits(client, settings), TrunkLimits(other_client, settings)
        t0 = 4_000_000.0
        results = [
            (first if i % 2 else second).take_call_slot("t", f"leg-{i}", 4, now=t0 + i * 0.01)
            for i in range(10)
        ]
        assert sum(permit.granted for permit in results) == 4
    finally:
        other_client.close()


def test_leases_cap_concurrency_and_expire_when_not_renewed(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings, lease_ttl=10.0)
    t0 = 5_000_000.0
    assert limits.acquire_lease("t", "a", 2, now=t0).granted
    assert limits.acquire_lease("t", "b", 2, now=t0).granted
    assert limits.acquire_lease("t", "a", 2, now=t0 + 1).granted  # same leg again: still one
    refused = limits.acquire_lease("t", "c", 2, now=t0 + 1)
    assert not refused.granted and refused.in_use == 2
    limits.release_lease("t", "b")
    assert limits.acquire_lease("t", "c", 2, now=t0 + 2).granted
    # 'a' is renewed by its worker; 'c' belongs to a worker that died and is not
    assert limits.renew_leases("t", ["a"], now=t0 + 9) == 1
    assert not limits.acquire_lease("t", "d", 2, now=t0 + 11).granted
    assert limits.acquire_lease("t", "d", 2, now=t0 + 12.5).granted  # c lapsed at t0+12
    assert limits.leases_in_use("t", now=t0 + 12.5) == 2


def test_renew_restores_leases_lost_with_redis(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings, lease_ttl=10.0)
    t0 = 6_000_000.0
    limits.acquire_lease("t", "a", 1, now=t0)
    client.delete(limits.leases_key("t"))  # what a Redis restart does
    limits.renew_leases("t", ["a"], now=t0 + 1)
    assert not limits.acquire_lease("t", "b", 1, now=t0 + 2).granted


def test_server_clock_is_used_without_now(client: redis.Redis[Any], settings: Settings) -> None:
    limits = TrunkLimits(client, settings)
    assert limits.take_call_slot("t", "a", 1).granted
    refused = limits.take_call_slot("t", "b", 1)
    assert not refused.granted and 0 < refused.retry_after <= 1.0
    assert limits.acquire_lease("t", "a", 1).granted
    assert limits.leases_in_use("t") == 1


def test_admit_takes_a_lease_and_a_start_together(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings, lease_ttl=10.0)
    t0 = 7_000_000.0
    assert limits.admit("t", "a", max_concurrent=2, cps=5, now=t0).granted
    assert limits.leases_in_use("t", now=t0) == 1
    # the start counts in the window shared with take_call_slot
    assert limits.take_call_slot("t", "x", 2, now=t0 + 0.1).granted
    assert not limits.take_call_slot("t", "y", 2, now=t0 + 0.1).granted
    # the same leg again (a redelivered message) takes neither a second lease nor a start
    assert limits.admit("t", "a", max_concurrent=1, cps=2, now=t0 + 0.2).granted
    assert limits.leases_in_use("t", now=t0 + 0.2) == 1


def test_admit_refused_by_concurrency_takes_no_start(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings, lease_ttl=10.0)
    t0 = 8_000_000.0
    assert limits.admit("t", "a", max_concurrent=1, cps=10, now=t0).granted
    refused = limits.admit("t", "b", max_concurrent=1, cps=10, now=t0 + 0.1)
    assert not refused.granted and refused.refused_by == "concurrency"
    # 'b' used no start: nine more legs fit in the window once leases allow
    limits.release_lease("t", "a")
    starts = [limits.admit("t", f"n{i}", max_concurrent=100, cps=10, now=t0 + 0.2)
              for i in range(10)]
    assert [permit.granted for permit in starts] == [True] * 9 + [False]


def test_admit_refused_by_cps_leaves_no_lease_behind(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings, lease_ttl=10.0)
    t0 = 9_000_000.0
    assert limits.admit("t", "a", max_concurrent=10, cps=1, now=t0).granted
    refused = limits.admit("t", "b", max_concurrent=10, cps=1, now=t0 + 0.25)
    assert not refused.granted and refused.refused_by == "cps"
    assert refused.retry_after == pytest.approx(0.75)
    assert limits.leases_in_use("t", now=t0 + 0.25) == 1
    assert limits.admit("t", "b", max_concurrent=10, cps=1, now=t0 + 1.01).granted
    assert limits.leases_in_use("t", now=t0 + 1.01) == 2


def test_admit_many_admits_in_order_until_the_first_refusal(
    client: redis.Redis[Any], settings: Settings
) -> None:
    limits = TrunkLimits(client, settings, lease_ttl=10.0)
    t0 = 10_000_000.0
    first = limits.admit_many("t", ["a", "b", "c", "d"], max_concurrent=10, cps=3, now=t0)
    assert (first.admitted, first.refused_by) == (3, "cps")
    assert first.retry_after == pytest.approx(1.0)
    assert limits.leases_in_use("t", now=t0) == 3  # 'd' holds nothing
    # the same legs again (a redelivered message) take nothing new; 'd' still waits
    again = limits.admit_many("t", ["a", "b", "c", "d"], max_concurrent=10, cps=3, now=t0 + 0.5)
    assert (again.admitted, again.refused_by) == (3, "cps")
    capped = limits.admit_many("t", ["d", "e"], max_concurrent=4, cps=10, now=t0 + 1.5)
    assert (capped.admitted, capped.refused_by) == (1, "concurrency")
    assert limits.leases_in_use("t", now=t0 + 1.5) == 4
    assert limits.admit_many("t", [], max_concurrent=1, cps=1).admitted == 0
