"""The shared test helpers: the deadline poll (blocking and asyncio) and the fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.clock import FakeClock
from tests.waiting import eventually, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    polls = itertools.count(1)

    def third_poll() -> int | None:
        number = next(polls)
        return number if number >= 3 else None

    assert wait_until(third_poll, 5, "the third poll", interval=0) == 3


def test_wait_until_names_what_it_waited_for_and_the_last_tolerated_error() -> None:
    with pytest.raises(TimeoutError, match=r"after 0.05 s waiting for the thing$"):
        wait_until(lambda: False, 0.05, "the thing")

    def refused() -> bool:
        raise ConnectionRefusedError("port closed")

    with pytest.raises(TimeoutError, match=r"waiting for a server \(last error: Connection"):
        wait_until(refused, 0.05, "a server", tolerate=(ConnectionError,))
    with pytest.raises(ConnectionRefusedError):  # not tolerated: raised at once
        wait_until(refused, 5, "a server")


def test_eventually_lets_the_loop_run_between_polls() -> None:
    async def scenario() -> str:
        done: list[str] = []
        asyncio.get_running_loop().call_soon(done.append, "ran")
        first = await eventually(lambda: done[0] if done else None, "the callback")
        with pytest.raises(TimeoutError, match="waiting for never"):
            await eventually(lambda: None, "never", timeout=0.02)
        return first

    assert asyncio.run(scenario()) == "ran"


def test_fake_clock_moves_only_forward_and_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock() == clock.now == 100.0
    assert clock.advance(2.5) == 102.5 and clock() == 102.5
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)
