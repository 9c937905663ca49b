"""Trunk health shared by every worker: OPTIONS ping results go into one Redis hash per trunk
(`{prefix}:health:{trunk}`) under the rule of sipstack/health.py (N consecutive misses: down,
M consecutive successes: up), so all workers agree on `is_up(trunk)` and a dial goes to the
next trunk of its group instead of waiting for Timer B on a dead one.

- Several workers may ping the same trunk; their results count in one run of misses or
  successes (a WATCH/MULTI update, workers/coordination/shared_state.py). One pinger per trunk
  (the trunk's pinned worker) is enough; more only ping more often.
- The hash expires `stale_after` seconds after the last result: when every pinger has
  stopped, the trunk counts as up again (fail open: no pings is no evidence).
- `HealthPinger` runs on the signaling loop and pings with `OptionsPinger`, the code behind
  `outbound trunks check` (same transports, TLS checks, Timer E retransmissions); the Redis
  update runs in a thread so the loop is not blocked by a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from sipstack.health import HealthRule, TrunkHealth, ping_ok
from workers.config.settings import TrunkConfig
from workers.coordination.shared_state import KeySpace, text_values, update_hash
from workers.events.entries import format_at
from workers.signaling.options_ping import OptionsPinger, PingResult

log = logging.getLogger(__name__)

_FIELDS = ["up", "misses", "successes", "since", "checked_at"]


class TrunkHealthBoard:
    """The shared up/down state of trunks in one Redis."""

    def __init__(
        self, client: redis.Redis[Any], settings: KeySpace,
        rule: HealthRule | None = None, *, stale_after: float = 300.0,
    ) -> None:
        if not isinstance(stale_after, int | float) or not 0 < stale_after < math.inf:
            raise ValueError(f"stale_after: must be a positive number of seconds, got "
                             f"{stale_after!r}")
        self._redis = client
        self._settings = settings
        self.rule = rule or HealthRule()
        self.stale_after = float(stale_after)
        self._last_up: dict[str, bool] = {}

    def key(self, trunk: str) -> str:
        return self._settings.key("health", trunk)

    def state(self, trunk: str) -> TrunkHealth:
        health = _decode(text_values(self._redis.hmget(self.key(trunk), _FIELDS)))
        self._last_up[trunk] = health.up
        return health

    def is_up(self, trunk: str) -> bool:
        """Up unless the pings said down (a trunk never pinged, or no longer, is up)."""
        return self.state(trunk).up

    def record(self, trunk: str, ok: bool, now: float) -> tuple[TrunkHealth, TrunkHealth]:
        """One ping result; (state before, state after), for an edge-triggered log or event."""
        rule = self.rule

        def step(
            values: list[str | None],
        ) -> tuple[dict[str, str], float, tuple[TrunkHealth, TrunkHealth]]:
            before = _decode(values)
            after = rule.observe(before, ok, now)
            return _encode(after), self.stale_after, (before, after)

        before, after = update_hash(self._redis, self.key(trunk), _FIELDS, step)
        self._last_up[trunk] = after.up
        return before, after

    def last_up(self, trunk: str) -> float:
        """1.0/0.0 from this process's last reading (no I/O), for the `outbound_trunk_up` gauge."""
        return 1.0 if self._last_up.get(trunk, True) else 0.0


def _encode(health: TrunkHealth) -> dict[str, str]:
    return {
        "up": "1" if health.up else "0",
        "misses": str(health.misses),
        "successes": str(health.successes),
        "since": "" if health.since is None else repr(health.since),
        "checked_at": "" if health.checked_at is None else repr(health.checked_at),
    }


def _decode(values: list[str | None]) -> TrunkHealth:
    up, misses, successes, since, checked_at = values
    if up is None:
        return TrunkHealth()
    return TrunkHealth(
        up=up == "1", misses=int(misses or 0), successes=int(successes or 0),
        since=float(since) if since else None,
        checked_at=float(checked_at) if checked_at else None,
    )


HealthChange = Callable[[str, TrunkHealth, PingResult], None]
TRUNK_DOWN = "trunk_down"
TRUNK_UP = "trunk_up"


def health_event(trunk: str, health: TrunkHealth, result: PingResult) -> dict[str, str]:
    """The record to XADD on the trunk's stream when `health` (the state after a ping) took the
    trunk down or up. Its time is the shared state's `since`, so workers that see the same edge
    build the same `event_id`, and its fields are the leg events' (`event_id`, `seq`, `state`,
    `trunk`, `status_code`, `reason`, `at`) plus `misses` and `successes`, as for
    workers.coordination.backpressure.pressure_event."""
    kind = TRUNK_UP if health.up else TRUNK_DOWN
    at = health.since if health.since is not None else time.time()
    seq = round(at * 1000)
    return {
        "event_id": f"trunk:{trunk}:{kind}:{seq}",
        "seq": str(seq),
        "state": kind,
        "trunk": trunk,
        "status_code": "" if result.status is None else str(result.status),
        "reason": result.error or f"OPTIONS {result.status} {result.reason}".rstrip(),
        "misses": str(health.misses),
        "successes": str(health.successes),
        "at": format_at(at),
    }


class HealthPinger:
    """Ping `trunks` with OPTIONS every `interval` seconds (from the end of one round to the
    start of the next) and record the results on `board`. `on_change(trunk, health, result)`
    is called when a trunk goes down or comes up (edge-triggered)."""

    def __init__(
        self, board: TrunkHealthBoard, trunks: Sequence[TrunkConfig], *,
        interval: float = 30.0, timeout: float = 5.0, bind_host: str = "0.0.0.0",
        clock: Callable[[], float] = time.time, on_change: HealthChange | None = None,
    ) -> None:
        for name, value in (("interval", interval), ("timeout", timeout)):
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
        if not trunks:
            raise ValueError("trunks: nothing to ping")
        self.board = board
        self.trunks = list(trunks)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self._bind_host = bind_host
        self._clock = clock
        self._on_change = on_change
        self.rounds = 0  # rounds recorded
        self.failed_rounds = 0  # rounds lost to an OSError or a Redis error
        self._task: asyncio.Task[None] | None = None

    async def ping_once(self) -> list[PingResult]:
        """One round: ping every trunk, record each result."""
        pinger = OptionsPinger(bind_host=self._bind_host, timeout=self.timeout)
        results = await pinger.ping(self.trunks)
        now = self._clock()
        for result in results:
            before, after = await asyncio.to_thread(
                self.board.record, result.trunk, ping_ok(result.status), now
            )
            if before.up != after.up:
                log.warning("trunk %s is %s (%s)", result.trunk, "up" if after.up else "down",
                            result.error or f"{result.status} {result.reason}")
                if self._on_change is not None:
                    self._on_change(result.trunk, after, result)
        self.rounds += 1
        return results

    async def run(self) -> None:
        """Ping until cancelled; a failed round (Redis away, socket error) is logged and the
        next one comes after the interval."""
        while True:
            try:
                await self.ping_once()
            except (OSError, redis.RedisError) as error:
                self.failed_rounds += 1
                log.warning("trunk health round failed: %r", error)
            await asyncio.sleep(self.interval)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
