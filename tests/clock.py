"""A clock that tests move by hand, for code that takes `now` or a `clock()` callable."""

from __future__ import annotations


class FakeClock:
    """`now` in epoch seconds; `advance` moves it; calling the clock returns it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        self.now += seconds
        return self.now
