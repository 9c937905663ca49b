"""Wait for a real condition until a deadline, never for a fixed time: a blocking poll for
threads and processes, and an asyncio one for code on a running loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    tolerate: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    TimeoutError naming `what` after `timeout` seconds. Exceptions of the `tolerate` types
    count as "not yet" (a server that is restarting refuses connections); the last one is
    named in the TimeoutError.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except tolerate as error:
            last_error = error
        if time.monotonic() >= deadline:
            raise TimeoutError(_timed_out(timeout, what, last_error))
        time.sleep(interval)


async def eventually(
    condition: Callable[[], T | None], what: str, timeout: float = 5.0, *, interval: float = 0.005
) -> T:
    """`wait_until` for a coroutine: the loop keeps running between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(_timed_out(timeout, what, None))
        await asyncio.sleep(interval)


def _timed_out(timeout: float, what: str, last_error: BaseException | None) -> str:
    detail = f" (last error: {last_error!r})" if last_error is not None else ""
    return f"timed out after {timeout:g} s waiting for {what}{detail}"
