"""sipstack.health: N misses down, M successes up, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipstack.health import HealthRule, TrunkHealth, ping_ok
from tests.clock import FakeClock


@pytest.mark.parametrize(("status", "ok"), [
    (None, False), (200, True), (404, True), (405, True), (401, True), (481, True),
    (500, False), (503, False), (599, False), (603, True),
])
def test_ping_ok_counts_timeouts_and_5xx_as_misses(status: int | None, ok: bool) -> None:
    assert ping_ok(status) is ok


@pytest.mark.parametrize("status", [100, 180, 700, True, "200"])
def test_ping_ok_refuses_what_is_not_a_final_status(status: object) -> None:
    with pytest.raises(ValueError, match="final status"):
        ping_ok(status)  # type: ignore[arg-type]


def run(rule: HealthRule, results: str, clock: FakeClock) -> list[TrunkHealth]:
    """Feed 'o' (ok) / 'x' (miss) one second apart; the state after each."""
    state, states = TrunkHealth(), []
    for result in results:
        state = rule.observe(state, result == "o", clock.advance(1.0))
        states.append(state)
    return states


@pytest.mark.parametrize(("results", "up_after_each"), [
    ("xx", "11"),  # two misses: still up with down_after=3
    ("xxx", "110"),  # the third consecutive miss takes it down
    ("xxoxx", "11111"),  # a success in between restarts the count
    ("xxxo", "1100"),  # one success is not enough with up_after=2
    ("xxxoo", "11001"),
    ("xxxoxoo", "1100001"),  # a miss in between restarts the success count
    ("xxxxxxoo", "11000001"),
])
def test_down_after_n_misses_up_after_m_successes(results: str, up_after_each: str) -> None:
    states = run(HealthRule(down_after=3, up_after=2), results, FakeClock(0.0))
    assert "".join("1" if s.up else "0" for s in states) == up_after_each


def test_since_and_checked_at_follow_the_clock() -> None:
    clock = FakeClock(100.0)
    states = run(HealthRule(down_after=2, up_after=1), "xxxo", clock)
    assert [s.since for s in states] == [None, 102.0, 102.0, 104.0]
    assert [s.checked_at for s in states] == [101.0, 102.0, 103.0, 104.0]
    assert (states[2].misses, states[3].successes, states[3].misses) == (3, 1, 0)


def test_a_fresh_trunk_is_up() -> None:
    assert TrunkHealth().up


@pytest.mark.parametrize(("field", "value"), [
    ("down_after", 0), ("up_after", -1), ("down_after", 1.5), ("up_after", True),
])
def test_rule_refuses_bad_thresholds_naming_them(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        HealthRule(**{field: value})  # type: ignore[arg-type]


@given(
    down_after=st.integers(1, 5), up_after=st.integers(1, 5),
    results=st.lists(st.booleans(), max_size=40),
)
def test_up_changes_only_after_a_full_run(
    down_after: int, up_after: int, results: list[bool]
) -> None:
    rule = HealthRule(down_after=down_after, up_after=up_after)
    state = TrunkHealth()
    for i, ok in enumerate(results):
        after = rule.observe(state, ok, float(i))
        if after.up and not state.up:
            assert ok and after.successes >= up_after
        if state.up and not after.up:
            assert not ok and after.misses >= down_after
        assert after.misses == 0 or after.successes == 0
        state = after
