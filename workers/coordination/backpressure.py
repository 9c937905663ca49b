"""Carrier back-pressure: a trunk that answers 503 or 429 with Retry-After gets fewer calls per
second from every worker, and the rate comes back gradually (AIMD).

State is one Redis hash per trunk (`{prefix}:pressure:{trunk}`): `factor` (the share of the
configured CPS, 0 < factor <= 1) that holds until `hold_until`, and `decreased_at`. After
`hold_until` the factor grows by `increase` per whole `interval` elapsed, up to 1; a new
signal multiplies the current factor by `decrease`. The arithmetic is the pure functions
below (`factor_at`, `after_signal`); the Redis part reads the hash, applies them and writes
it back in a WATCH/MULTI transaction, so concurrent signals from several workers serialise
and a reader needs one HMGET and no write. The hash expires once the factor is back at 1,
so a recovered trunk leaves no key behind.

Decisions where the issue leaves room:
- Only a 503 or 429 *with* Retry-After backs off. RFC 3261 §21.5.4: a 503 without one is to
  be treated as a 500, a failure of this attempt (failover, workers/routing/groups.py) and
  not a request to slow down.
- While the Retry-After holds, the trunk keeps its reduced rate rather than none: the signal
  comes from one call, and other calls on the trunk may still be served (RFC 3261 lets the
  client decide); a down trunk is the OPTIONS health check's business.
- Many workers see the same overload at once: one decrease per `guard` seconds counts, the
  others only extend the hold (otherwise ten workers' 503s would cut the rate by 2**10).
- Time is the caller's `now` (epoch seconds), so tests use a fake clock; workers pass
  `time.time()`, and skew between their clocks shifts recovery by that much.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis

from sipstack.headers.retry_after import retry_after_seconds as retry_after_seconds
from workers.coordination.shared_state import KeySpace, text_values, update_hash
from workers.events.stream import format_at

BACKOFF_STATUSES = frozenset({429, 503})
_EPSILON = 1e-9
THROTTLED = "trunk_throttled"
RECOVERED = "trunk_recovered"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackPressureConfig:
    """AIMD parameters: `decrease` multiplies the factor on each back-off signal (at most once
    per `guard` seconds), `increase` is added per `interval` seconds once the Retry-After has
    elapsed; the factor never drops below `min_factor`; a Retry-After above `max_hold` seconds
    is cut to it (a carrier's `Retry-After: 86400` should not silence a trunk for a day)."""

    decrease: float = 0.5
    increase: float = 0.1
    interval: float = 5.0
    min_factor: float = 0.05
    guard: float = 1.0
    max_hold: float = 300.0

    def __post_init__(self) -> None:
        if not _is_number(self.decrease) or not 0 < self.decrease < 1:
            raise ValueError(f"decrease: must be above 0 and below 1, got {self.decrease!r}")
        for name in ("increase", "min_factor"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                raise ValueError(f"{name}: must be above 0 and at most 1, got {value!r}")
        for name in ("interval", "max_hold"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
        if not _is_number(self.guard) or not 0 <= self.guard < math.inf:
            raise ValueError(f"guard: must be a number of seconds >= 0, got {self.guard!r}")


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _check_cps(configured_cps: float) -> None:
    if not _is_number(configured_cps) or not 0 < configured_cps < math.inf:
        raise ValueError(f"configured_cps: must be positive, got {configured_cps!r}")


def _check_retry_after(retry_after: float | None) -> None:
    if retry_after is not None and (
        not _is_number(retry_after) or not 0 <= retry_after < math.inf
    ):
        raise ValueError(f"retry_after: must be seconds >= 0 or None, got {retry_after!r}")


@dataclass(frozen=True, slots=True)
class Pressure:
    """One trunk's back-pressure: `factor` holds until `hold_until`, then recovers."""

    factor: float = 1.0
    hold_until: float = 0.0
    decreased_at: float | None = None


def is_backoff_signal(status: int | None, retry_after: float | None) -> bool:
    return status in BACKOFF_STATUSES and retry_after is not None


def factor_at(state: Pressure, now: float, config: BackPressureConfig) -> float:
    """The share of the configured CPS the trunk gets at `now`."""
    if now <= state.hold_until or state.factor >= 1.0:
        return min(state.factor, 1.0)
    # the tolerances: float steps and times must still land on 1 at `recovered_at`
    steps = math.floor((now - state.hold_until) / config.interval + _EPSILON)
    factor = state.factor + steps * config.increase
    return 1.0 if factor >= 1.0 - _EPSILON else factor  # 0.1 + 3 * 0.3 is 0.99999...


def after_signal(
    state: Pressure, status: int | None, retry_after: float | None, now: float,
    config: BackPressureConfig,
) -> Pressure:
    """The state after a final response `status` with `retry_after` seconds (None: no
    Retry-After) at `now`; unchanged when it is not a back-off signal. A signal less than
    `guard` seconds after the last decrease (or stamped before it: workers' clocks and
    round trips interleave) only extends the hold."""
    _check_retry_after(retry_after)
    if not is_backoff_signal(status, retry_after):
        return state
    assert retry_after is not None
    current = factor_at(state, now, config)
    guarded = state.decreased_at is not None and now - state.decreased_at < config.guard
    factor = current if guarded else max(config.min_factor, current * config.decrease)
    hold_until = now + min(float(retry_after), config.max_hold)
    if now <= state.hold_until:
        hold_until = max(hold_until, state.hold_until)
    return replace(
        state, factor=factor, hold_until=hold_until,
        decreased_at=state.decreased_at if guarded else now,
    )


def recovered_at(state: Pressure, config: BackPressureConfig) -> float:
    """When the factor is back at 1 (if no further signal comes)."""
    if state.factor >= 1.0:
        return state.hold_until
    steps = math.ceil((1.0 - _EPSILON - state.factor) / config.increase)
    return state.hold_until + steps * config.interval


# -- events -------------------------------------------------------------------------------


def pressure_event(
    trunk: str, before: float, after: float, at: float, *, configured_cps: float,
    status: int | None = None, retry_after: float | None = None,
) -> dict[str, str] | None:
    """The record to XADD on the trunk's stream when the factor crosses 1, edge-triggered:
    `trunk_throttled` when it drops below 1 from 1, `trunk_recovered` when it is back at 1;
    None otherwise (a further decrease while throttled is not news).

    `at`: when the edge happened, taken from the shared state (`decreased_at` for throttled,
    `recovered_at` for recovered; `BackPressure.poll` does this), so every worker that
    notices the same edge builds the same `event_id` and consumers drop the repeats, as they
    do for leg events. Fields follow the leg events' stream entries (`event_id`, `seq`,
    `state`, `trunk`, `status_code`, `reason`, `at`) so a consumer that reads those does not
    choke, plus `factor` and `cps` (the effective calls per second)."""
    if before >= 1.0 > after:
        kind = THROTTLED
    elif after >= 1.0 > before:
        kind = RECOVERED
    else:
        return None
    seq = round(at * 1000)
    reason = ""
    if kind == THROTTLED and status is not None:
        reason = f"{status} Retry-After {retry_after:g}" if retry_after is not None \
            else str(status)
    return {
        "event_id": f"trunk:{trunk}:{kind}:{seq}",
        "seq": str(seq),
        "state": kind,
        "trunk": trunk,
        "status_code": "" if status is None or kind == RECOVERED else str(status),
        "reason": reason,
        "factor": f"{min(after, 1.0):.4f}",
        "cps": f"{configured_cps * min(after, 1.0):.4f}",
        "at": format_at(at),
    }


# -- Redis --------------------------------------------------------------------------------


class BackPressure:
    """The shared back-pressure of trunks in one Redis.

    `last_factor(trunk)` is this process's last reading (no I/O), for a metrics gauge; see
    workers/observability/pressure_metrics.py."""

    def __init__(
        self, client: redis.Redis[Any], settings: KeySpace,
        config: BackPressureConfig | None = None,
    ) -> None:
        self._redis = client
        self._settings = settings
        self.config = config or BackPressureConfig()
        self._last: dict[str, float] = {}

    def key(self, trunk: str) -> str:
        return self._settings.key("pressure", trunk)

    def state(self, trunk: str) -> Pressure:
        return _decode(text_values(self._redis.hmget(self.key(trunk), _FIELDS)))

    def factor(self, trunk: str, now: float) -> float:
        factor = factor_at(self.state(trunk), now, self.config)
        self._last[trunk] = factor
        return factor

    def poll(
        self, trunk: str, configured_cps: float, now: float
    ) -> tuple[float, dict[str, str] | None]:
        """`effective_cps`, and the `pressure_event` when the factor crossed 1 since this
        process's last reading (a worker calls this where it admits dials, or on a timer)."""
        _check_cps(configured_cps)
        state = self.state(trunk)
        before = self._last.get(trunk, 1.0)
        after = factor_at(state, now, self.config)
        self._last[trunk] = after
        if after < 1.0:
            at = state.decreased_at if state.decreased_at is not None else now
        else:  # the hash lapses one interval after recovery: then `now` is all we know
            at = recovered_at(state, self.config) if state.factor < 1.0 else now
        event = pressure_event(trunk, before, after, at, configured_cps=configured_cps)
        return configured_cps * after, event

    def effective_cps(self, trunk: str, configured_cps: float, now: float) -> float:
        """The CPS to pass to `TrunkLimits.admit_many(..., cps=...)` now."""
        _check_cps(configured_cps)
        return configured_cps * self.factor(trunk, now)

    def signal(
        self, trunk: str, status: int | None, retry_after: float | None, now: float
    ) -> tuple[float, float]:
        """Record a final response from `trunk`; (factor before, factor after) at `now`,
        the input of `pressure_event`. A response that is no back-off signal costs one read."""
        config = self.config
        if not is_backoff_signal(status, retry_after):
            _check_retry_after(retry_after)
            factor = self.factor(trunk, now)
            return factor, factor

        def step(values: list[str | None]) -> tuple[dict[str, str], float, tuple[float, float]]:
            state = _decode(values)
            new = after_signal(state, status, retry_after, now, config)
            fields = {
                "factor": repr(new.factor), "hold_until": repr(new.hold_until),
                "decreased_at": "" if new.decreased_at is None else repr(new.decreased_at),
            }
            ttl = max(recovered_at(new, config) - now, 0.0) + config.interval
            return fields, ttl, (factor_at(state, now, config), factor_at(new, now, config))

        before, after = update_hash(self._redis, self.key(trunk), _FIELDS, step)
        self._last[trunk] = after
        return before, after

    def last_factor(self, trunk: str) -> float:
        return self._last.get(trunk, 1.0)

    def gauge_reader(self, trunk: str) -> Callable[[], float]:
        return lambda: self.last_factor(trunk)


_FIELDS = ["factor", "hold_until", "decreased_at"]


def _decode(values: list[str | None]) -> Pressure:
    factor, hold_until, decreased_at = values
    if factor is None:
        return Pressure()
    return Pressure(
        factor=float(factor), hold_until=float(hold_until or 0.0),
        decreased_at=float(decreased_at) if decreased_at else None,
    )
