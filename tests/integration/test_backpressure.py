"""Carrier back-pressure on the real Redis, driven by a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.clock import FakeClock
from workers.config.settings import Settings
from workers.coordination.backpressure import (
    RECOVERED,
    THROTTLED,
    BackPressure,
    BackPressureConfig,
    Pressure,
    after_signal,
    factor_at,
    pressure_event,
    recovered_at,
    retry_after_seconds,
)
from workers.coordination.limits import TrunkLimits
from workers.observability.pressure_metrics import register_pressure_gauges

pytestmark = pytest.mark.services

CONFIG = BackPressureConfig(decrease=0.5, increase=0.25, interval=10.0, min_factor=0.1,
                            guard=1.0, max_hold=60.0)


# -- the arithmetic -------------------------------------------------------------------------


def test_decrease_holds_for_retry_after_then_increases_per_interval() -> None:
    state = after_signal(Pressure(), 503, 30.0, 100.0, CONFIG)
    assert state == Pressure(factor=0.5, hold_until=130.0, decreased_at=100.0)
    assert [factor_at(state, t, CONFIG) for t in (100, 129.9, 130, 139.9, 140, 150, 160, 999)] \
        == [0.5, 0.5, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert recovered_at(state, CONFIG) == 150.0


@pytest.mark.parametrize(("status", "retry_after", "backs_off"), [
    (503, 5.0, True), (429, 5.0, True), (503, 0.0, True),
    (503, None, False),  # RFC 3261 §21.5.4: a plain 503 is a 500, failover not slow-down
    (429, None, False), (500, 5.0, False), (486, 5.0, False), (None, None, False),
])
def test_only_503_and_429_with_retry_after_back_off(
    status: int | None, retry_after: float | None, backs_off: bool
) -> None:
    state = after_signal(Pressure(), status, retry_after, 100.0, CONFIG)
    assert (state.factor < 1.0) is backs_off


def test_signals_within_the_guard_extend_the_hold_without_a_second_cut() -> None:
    state = after_signal(Pressure(), 503, 10.0, 100.0, CONFIG)
    state = after_signal(state, 503, 20.0, 100.5, CONFIG)  # another worker, same overload
    assert (state.factor, state.hold_until, state.decreased_at) == (0.5, 120.5, 100.0)
    state = after_signal(state, 503, 1.0, 102.0, CONFIG)  # past the guard: cut again
    assert (state.factor, state.hold_until) == (0.25, 120.5)  # the longer hold stays
    for t in range(103, 110):
        state = after_signal(state, 429, 1.0, float(t), CONFIG)
    assert state.factor == CONFIG.min_factor


def test_a_signal_while_recovering_cuts_from_the_recovered_factor() -> None:
    state = after_signal(Pressure(), 503, 0.0, 100.0, CONFIG)  # 0.5, recovering from 100
    assert factor_at(state, 110.0, CONFIG) == 0.75
    state = after_signal(state, 503, 5.0, 110.0, CONFIG)
    assert (state.factor, state.hold_until) == (0.375, 115.0)


def test_recovery_reaches_exactly_one_despite_float_steps() -> None:
    config = BackPressureConfig(increase=0.3, interval=1.0)
    state = Pressure(factor=0.1, hold_until=0.0)  # 0.1 + 3 * 0.3 == 0.9999999999999999
    assert recovered_at(state, config) == 3.0
    assert factor_at(state, 2.5, config) == pytest.approx(0.7)
    assert factor_at(state, 3.0, config) == 1.0


def test_retry_after_is_capped_by_max_hold() -> None:
    state = after_signal(Pressure(), 503, 86400.0, 100.0, CONFIG)
    assert state.hold_until == 160.0


@given(
    st.lists(st.tuples(
        st.floats(0, 50), st.sampled_from([503, 429, 500, 486]),
        st.one_of(st.none(), st.floats(0, 100)),
    ), max_size=30),
    st.sampled_from([CONFIG, BackPressureConfig(), BackPressureConfig(
        decrease=0.7, increase=0.03, interval=1.0, min_factor=0.01, guard=0.0)]),
)
def test_the_factor_stays_in_bounds_and_only_signals_lower_it(
    steps: list[tuple[float, int, float | None]], config: BackPressureConfig
) -> None:
    state, now = Pressure(), 1000.0
    for gap, status, retry_after in steps:
        before = factor_at(state, now, config)
        later = now + gap
        assert factor_at(state, later, config) >= before  # time alone only raises it
        now = later
        current = factor_at(state, now, config)
        state = after_signal(state, status, retry_after, now, config)
        after = factor_at(state, now, config)
        assert config.min_factor <= after <= 1.0
        assert after <= current
        if after < current:
            assert status in (429, 503) and retry_after is not None
        assert factor_at(state, recovered_at(state, config), config) == 1.0


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), (" 5 (overloaded);duration=60", 5.0), ("0", 0.0), (None, None),
    ("soon", None), ("", None),
])
def test_retry_after_header_values(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"decrease": 1.0}, "decrease"), ({"decrease": 0}, "decrease"),
    ({"increase": 0.0}, "increase"), ({"min_factor": 1.5}, "min_factor"),
    ({"interval": 0}, "interval"), ({"max_hold": float("inf")}, "max_hold"),
    ({"guard": -1}, "guard"), ({"decrease": "0.5"}, "decrease"),
])
def test_config_refuses_bad_values_naming_them(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        BackPressureConfig(**kwargs)


@pytest.mark.parametrize("retry_after", [-1.0, float("nan"), "30"])
def test_bad_retry_after_is_refused(retry_after: Any) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        after_signal(Pressure(), 503, retry_after, 100.0, CONFIG)


def test_events_are_edge_triggered() -> None:
    throttled = pressure_event("t", 1.0, 0.5, 1_700_000_000.0, configured_cps=20.0,
                               status=503, retry_after=30.0)
    assert throttled == {
        "event_id": "trunk:t:trunk_throttled:1700000000000", "seq": "1700000000000",
        "state": THROTTLED,
        "trunk": "t", "status_code": "503", "reason": "503 Retry-After 30",
        "factor": "0.5000", "cps": "10.0000", "at": "2023-11-14T22:13:20.000000Z",
    }
    assert pressure_event("t", 0.5, 0.25, 1.0, configured_cps=20.0) is None  # still throttled
    assert pressure_event("t", 0.5, 0.75, 1.0, configured_cps=20.0) is None  # recovering
    assert pressure_event("t", 1.0, 1.0, 1.0, configured_cps=20.0) is None
    recovered = pressure_event("t", 0.75, 1.0, 2.0, configured_cps=20.0)
    assert recovered is not None and recovered["state"] == RECOVERED
    assert (recovered["factor"], recovered["cps"], recovered["status_code"]) == \
        ("1.0000", "20.0000", "")


# -- shared through Redis -------------------------------------------------------------------


def test_a_signal_on_one_worker_lowers_the_cps_every_worker_sees(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    other: redis.Redis[Any] = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        clock = FakeClock(1_000_000.0)
        first = BackPressure(redis_client, redis_settings, CONFIG)
        second = BackPressure(other, redis_settings, CONFIG)
        assert second.effective_cps("t", 20.0, clock.now) == 20.0
        assert first.signal("t", 503, 30.0, clock.now) == (1.0, 0.5)
        assert second.effective_cps("t", 20.0, clock.now) == 10.0
        assert second.effective_cps("other", 20.0, clock.now) == 20.0  # per trunk
        # the second worker's 503 for the same overload, within the guard: no second cut
        assert second.signal("t", 503, 30.0, clock.advance(0.5)) == (0.5, 0.5)
        clock.advance(30.0 + 10.0)  # the hold elapsed, one interval of increase
        assert first.effective_cps("t", 20.0, clock.now) == 15.0
        clock.advance(10.0)
        assert second.effective_cps("t", 20.0, clock.now) == 20.0
        assert first.last_factor("t") == 0.75 and second.last_factor("t") == 1.0
    finally:
        other.close()


def test_a_response_that_is_no_signal_changes_nothing_and_writes_nothing(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    pressure = BackPressure(redis_client, redis_settings, CONFIG)
    assert pressure.signal("t", 503, None, 100.0) == (1.0, 1.0)
    assert pressure.signal("t", 486, 10.0, 100.0) == (1.0, 1.0)
    assert not redis_client.exists(pressure.key("t"))


def test_the_key_expires_once_recovered(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    pressure = BackPressure(redis_client, redis_settings, CONFIG)
    pressure.signal("t", 429, 30.0, 100.0)
    # back at 1 at 100 + 30 + 2 intervals = 150: the key lives 50 s plus one interval
    assert 59_000 < redis_client.pttl(pressure.key("t")) <= 60_000


def test_concurrent_signals_from_many_clients_serialise(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    import threading

    config = BackPressureConfig(decrease=0.5, increase=0.1, interval=10.0, min_factor=1e-9,
                                guard=0.0)
    clients = [redis.Redis.from_url("redis://127.0.0.1:6379/0") for _ in range(4)]
    try:
        workers = [BackPressure(c, redis_settings, config) for c in clients]
        barrier = threading.Barrier(len(workers))

        def send(pressure: BackPressure) -> None:
            barrier.wait()
            for _ in range(5):  # one instant: with guard 0 every signal cuts
                pressure.signal("t", 503, 100.0, 1000.0)

        threads = [threading.Thread(target=send, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            # 20 decreases, none lost to a race (a lost update would leave 0.5 ** k, k < 20)
        assert BackPressure(redis_client, redis_settings, config).state("t").factor == 0.5 ** 20
    finally:
        for c in clients:
            c.close()


def test_the_effective_cps_composes_with_trunk_limits(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    pressure = BackPressure(redis_client, redis_settings, CONFIG)
    limits = TrunkLimits(redis_client, redis_settings, lease_ttl=10.0)
    t0 = 2_000_000.0
    pressure.signal("t", 503, 60.0, t0)
    cps = pressure.effective_cps("t", 8.0, t0 + 1)
    admission = limits.admit_many("t", [f"leg-{i}" for i in range(8)], max_concurrent=100,
                                  cps=cps, now=t0 + 1)
    assert (cps, admission.admitted, admission.refused_by) == (4.0, 4, "cps")
    # at the floor a 1-cps trunk gets a fractional rate: one start per 10 s
    for i in range(5):
        pressure.signal("slow", 503, 60.0, t0 + i * 2)
    slow = pressure.effective_cps("slow", 1.0, t0 + 10)
    assert slow == pytest.approx(0.1)
    assert limits.admit("slow", "a", max_concurrent=10, cps=slow, now=t0 + 10).granted
    refused = limits.admit("slow", "b", max_concurrent=10, cps=slow, now=t0 + 11)
    assert not refused.granted and refused.retry_after == pytest.approx(9.0)


def test_bad_configured_cps_is_refused(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    with pytest.raises(ValueError, match="configured_cps"):
        BackPressure(redis_client, redis_settings).effective_cps("t", 0.0, 1.0)


def test_the_gauge_reads_the_last_factor_without_io(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    pressure = BackPressure(redis_client, redis_settings, CONFIG)
    registry = CollectorRegistry()
    register_pressure_gauges(registry, "t", factor=pressure.gauge_reader("t"))
    assert registry.get_sample_value("outbound_trunk_cps_factor", {"trunk": "t"}) == 1.0
    pressure.signal("t", 503, 30.0, 100.0)
    assert registry.get_sample_value("outbound_trunk_cps_factor", {"trunk": "t"}) == 0.5


def test_poll_emits_each_edge_once_per_worker_with_one_event_id_across_workers(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    signaller = BackPressure(redis_client, redis_settings, CONFIG)
    watcher = BackPressure(redis_client, redis_settings, CONFIG)
    t0 = 1_700_000_000.0
    assert watcher.poll("t", 20.0, t0) == (20.0, None)
    before, after = signaller.signal("t", 503, 30.0, t0)
    throttled = pressure_event("t", before, after, t0, configured_cps=20.0, status=503,
                               retry_after=30.0)
    assert throttled is not None and throttled["state"] == THROTTLED
    assert signaller.poll("t", 20.0, t0 + 1) == (10.0, None)  # it knew already
    cps, seen = watcher.poll("t", 20.0, t0 + 1)  # another worker notices the same edge
    assert cps == 10.0 and seen is not None
    assert (seen["event_id"], seen["state"]) == (throttled["event_id"], THROTTLED)
    assert watcher.poll("t", 20.0, t0 + 2) == (10.0, None)  # edge-triggered: once
    # back at 1 at t0 + 30 + 2 * 10; the two workers notice at different times
    assert watcher.poll("t", 20.0, t0 + 45)[1] is None  # 0.75: recovering, not news
    _, first = watcher.poll("t", 20.0, t0 + 51)
    _, second = signaller.poll("t", 20.0, t0 + 55)
    assert first is not None and second is not None
    assert first == second and first["state"] == RECOVERED
    assert first["at"] == "2023-11-14T22:14:10.000000Z"  # t0 + 50, not either worker's now
    assert watcher.poll("t", 20.0, t0 + 56) == (20.0, None)
