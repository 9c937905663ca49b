"""Per-trunk limits shared by every worker of a trunk through Redis: calls per second and
concurrent legs.

Both are single Lua scripts, so each check-and-take is atomic across processes and machines.
Time comes from the Redis server (`TIME`) unless a test passes `now`, so workers with skewed
clocks still share one window.

- CPS is a sliding-window log: a sorted set of the starts in the last second; at most `cps`
  members, so no one-second window ever holds more than `cps` INVITEs. A leg's member is its
  id, so asking again for the same leg (a redelivered task) does not take a second slot.
- Concurrency is a set of leases (sorted set scored by expiry). The owning worker renews the
  leases of its live legs; a dead worker's leases lapse after the TTL, so its slots come back
  even if nothing else cleans up.
- `admit` / `admit_many` check both in one script (one round trip per dial message) and take
  both or neither, so a refusal by the CPS window never leaves a lease to give back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.config.settings import Settings

# Returns {granted (1/0), wait seconds as text}. Floats are passed as text: Lua numbers
# returned to Redis are truncated to integers.
_CPS_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local member = ARGV[3]
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZSCORE', key, member) then
  return {1, '0'}
end
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(window * 2000))
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + window - now)}
"""

_LEASE_ACQUIRE_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local member = ARGV[3]
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, member) then
  redis.call('ZADD', key, now + ttl, member)
  return {1, redis.call('ZCARD', key)}
end
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now + ttl, member)
  return {1, count + 1}
end
return {0, count}
"""

# Renew adds members that are missing too: after a Redis restart the live legs take their
# slots back on the next renewal.
_LEASE_RENEW_SCRIPT = """
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
for i = 3, #ARGV do
  redis.call('ZADD', key, now + ttl, ARGV[i])
end
return #ARGV - 2
"""

# KEYS: leases, cps window. ARGV: max_concurrent, lease ttl, cps limit, cps window, now,
# then the members (legs) in order. Admits members until the first refusal.
# Returns {members admitted, refused by ('' | 'concurrency' | 'cps'), wait seconds as text}.
_ADMIT_SCRIPT = """
local leases, window_key = KEYS[1], KEYS[2]
local max_concurrent = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
redis.call('ZREMRANGEBYSCORE', window_key, '-inf', now - window)
local admitted = 0
local refused, wait = '', '0'
for i = 6, #ARGV do
  local member = ARGV[i]
  if not redis.call('ZSCORE', leases, member)
      and redis.call('ZCARD', leases) >= max_concurrent then
    refused = 'concurrency'
    break
  end
  if not redis.call('ZSCORE', window_key, member) then
    local count = redis.call('ZCARD', window_key)
    if count >= limit then
      local oldest = redis.call('ZRANGE', window_key, count - limit, count - limit, 'WITHSCORES')
      refused, wait = 'cps', tostring(tonumber(oldest[2]) + window - now)
      break
    end
    redis.call('ZADD', window_key, now, member)
  end
  redis.call('ZADD', leases, now + ttl, member)
  admitted = admitted + 1
end
if admitted > 0 then
  redis.call('PEXPIRE', window_key, math.ceil(window * 2000))
end
return {admitted, refused, wait}
"""

CPS_WINDOW = 1.0


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer of `admit_many`: the first `admitted` legs may start; the next one was
    refused by `refused_by` ("concurrency" or "cps"), worth asking again after
    `retry_after` seconds (cps; 0 for concurrency, whose slots free up when calls end)."""

    admitted: int
    refused_by: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer of a limit check: granted now, or try again after `retry_after` seconds."""

    granted: bool
    retry_after: float = 0.0
    in_use: int = 0
    refused_by: str = ""  # "concurrency" or "cps" when `admit` refuses


class TrunkLimits:
    """The shared CPS window and concurrency leases of trunks, in one Redis."""

    def __init__(
        self,
        client: redis.Redis[Any],
        settings: Settings,
        *,
        lease_ttl: float | None = None,
    ) -> None:
        self._redis = client
        self._settings = settings
        self.lease_ttl = lease_ttl if lease_ttl is not None else max(settings.heartbeat_ttl, 1.0)
        self._cps = client.register_script(_CPS_SCRIPT)
        self._acquire = client.register_script(_LEASE_ACQUIRE_SCRIPT)
        self._renew = client.register_script(_LEASE_RENEW_SCRIPT)
        self._admit = client.register_script(_ADMIT_SCRIPT)

    def cps_key(self, trunk: str) -> str:
        return self._settings.key("limits", trunk, "cps")

    def leases_key(self, trunk: str) -> str:
        return self._settings.key("limits", trunk, "legs")

    def admit(
        self, trunk: str, leg: str, *, max_concurrent: int, cps: float,
        now: float | None = None,
    ) -> Permit:
        """A concurrency lease and a start in the CPS window for this leg, both or neither,
        in one round trip (idempotent per leg, like `acquire_lease` and `take_call_slot`)."""
        admission = self.admit_many(trunk, [leg], max_concurrent=max_concurrent, cps=cps, now=now)
        return Permit(
            granted=admission.admitted == 1,
            retry_after=admission.retry_after,
            refused_by=admission.refused_by,
        )

    def admit_many(
        self, trunk: str, legs: Sequence[str], *, max_concurrent: int, cps: float,
        now: float | None = None,
    ) -> Admission:
        """`admit` for several legs in one round trip: they are admitted in order until the
        first one the limits refuse; that one and the rest are to be tried again later."""
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if not legs:
            return Admission(0)
        limit, window = _cps_window(cps)
        admitted, refused_by, wait = self._admit(
            keys=[self.leases_key(trunk), self.cps_key(trunk)],
            args=[max_concurrent, self.lease_ttl, limit, window, _now_arg(now), *legs],
        )
        return Admission(
            admitted=int(admitted),
            refused_by=refused_by.decode() if isinstance(refused_by, bytes) else str(refused_by),
            retry_after=max(0.0, float(wait)),
        )

    def take_call_slot(
        self, trunk: str, leg: str, cps: float, *, now: float | None = None
    ) -> Permit:
        """One start in the trunk's one-second window for this leg, or how long to wait.

        A fractional cps (0.5) becomes a window of 1/cps seconds holding one start.
        """
        limit, window = _cps_window(cps)
        granted, wait = self._cps(
            keys=[self.cps_key(trunk)], args=[limit, window, leg, _now_arg(now)]
        )
        return Permit(granted=bool(granted), retry_after=max(0.0, float(wait)))

    def acquire_lease(
        self, trunk: str, leg: str, max_concurrent: int, *, now: float | None = None
    ) -> Permit:
        """A concurrency slot for this leg (idempotent per leg), or a refusal."""
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        granted, in_use = self._acquire(
            keys=[self.leases_key(trunk)],
            args=[max_concurrent, self.lease_ttl, leg, _now_arg(now)],
        )
        return Permit(granted=bool(granted), in_use=int(in_use))

    def release_lease(self, trunk: str, leg: str) -> None:
        self._redis.zrem(self.leases_key(trunk), leg)

    def release_leases(self, trunk: str, legs: Iterable[str]) -> None:
        members = list(legs)
        if members:
            self._redis.zrem(self.leases_key(trunk), *members)

    def renew_leases(self, trunk: str, legs: Iterable[str], *, now: float | None = None) -> int:
        members = list(legs)
        if not members:
            return 0
        renewed = self._renew(
            keys=[self.leases_key(trunk)], args=[self.lease_ttl, _now_arg(now), *members]
        )
        return int(renewed)

    def leases_in_use(self, trunk: str, *, now: float | None = None) -> int:
        """Live (unexpired) leases of a trunk."""
        if now is None:
            seconds, micros = self._redis.time()
            now = seconds + micros / 1_000_000
        return int(self._redis.zcount(self.leases_key(trunk), f"({now}", "+inf"))


def _cps_window(cps: float) -> tuple[int, float]:
    """(starts allowed, window seconds): a fractional cps (0.5) is one start per 1/cps s."""
    if cps <= 0:
        raise ValueError(f"cps must be positive, got {cps}")
    if cps >= 1:
        return math.floor(cps), CPS_WINDOW
    return 1, CPS_WINDOW / cps


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))
