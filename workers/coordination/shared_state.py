"""Read-modify-write of one Redis hash under WATCH/MULTI, for state whose rule is a pure
Python function (back-pressure, trunk health): the rule is written once, not again in Lua,
and concurrent writers from several workers serialise (a loser re-reads and redoes)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import redis

T = TypeVar("T")


class KeySpace(Protocol):
    """What is needed of the settings: the Redis key under the deployment's prefix
    (`Settings.key`), so these modules do not depend on how settings are built."""

    def key(self, *parts: str) -> str: ...


def text_values(values: Sequence[Any]) -> list[str | None]:
    """HMGET's answer as text (None for absent fields)."""
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def update_hash(
    client: redis.Redis[Any], key: str, fields: Sequence[str],
    step: Callable[[list[str | None]], tuple[Mapping[str, str], float, T]],
) -> T:
    """Read `fields` of hash `key`, call `step(values)` -> (fields to write, seconds until the
    hash expires, result), write them atomically unless another client wrote the key in
    between (then read again and redo); return the result of the step that was written."""
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)  # immediate mode until multi()
                values = text_values(cast(list[Any], pipe.hmget(key, list(fields))))
                mapping, ttl, result = step(values)
                pipe.multi()
                values_out: dict[str | bytes, bytes | float | int | str] = {
                    k: v for k, v in mapping.items()
                }
                pipe.hset(key, mapping=values_out)
                pipe.pexpire(key, max(1, math.ceil(ttl * 1000)))
                pipe.execute()
                return result
            except redis.WatchError:
                continue
