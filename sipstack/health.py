"""Trunk health from OPTIONS pings, sans-IO: N consecutive misses mark a trunk down, M
consecutive successes mark it up again (hysteresis, so one lost datagram does not flap it).

A ping is a *miss* when nothing came back in time or the answer is a 5xx (the proxy is there
but says it cannot serve); any other final response is a success (a 401/403/404/405 still
proves the proxy answers, like `outbound trunks check`). A 6xx to OPTIONS is not a statement
about the trunk's health either: success.

`TrunkHealth` is an immutable value; `HealthRule.observe(state, ok, now)` returns the next
one, so the same rule runs in one process or under a Redis transaction shared by all workers
(workers/coordination/health.py). A trunk nobody has pinged yet is up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


def ping_ok(status: int | None) -> bool:
    """Did an OPTIONS ping succeed? `status`: its final status code, None when none came."""
    if status is None:
        return False
    if type(status) is not int or not 200 <= status <= 699:
        raise ValueError(f"final status {status!r} is not an integer 200-699")
    return not 500 <= status <= 599


@dataclass(frozen=True, slots=True)
class TrunkHealth:
    """What the pings said so far: `up`, the current run of misses or successes, and when
    `up` last changed (`since`, None: never) and the last ping was seen (`checked_at`)."""

    up: bool = True
    misses: int = 0  # consecutive misses (0 after any success)
    successes: int = 0  # consecutive successes (0 after any miss)
    since: float | None = None
    checked_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthRule:
    """`down_after` consecutive misses take a trunk down, `up_after` consecutive successes
    bring it back."""

    down_after: int = 3
    up_after: int = 2

    def __post_init__(self) -> None:
        for name in ("down_after", "up_after"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name}: must be an integer of at least 1, got {value!r}")

    def observe(self, state: TrunkHealth, ok: bool, now: float) -> TrunkHealth:
        """The state after one ping result seen at `now`."""
        if ok:
            successes, misses = state.successes + 1, 0
            up = state.up or successes >= self.up_after
        else:
            successes, misses = 0, state.misses + 1
            up = state.up and misses < self.down_after
        since = now if up != state.up else state.since
        return replace(
            state, up=up, misses=misses, successes=successes, since=since, checked_at=now
        )
