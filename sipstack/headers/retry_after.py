"""Retry-After (RFC 3261 §20.33): `delta-seconds [comment] *(;param)`; only the seconds count.
The one reader of it: the session-timer refresh retry, the CDR of a failed leg and the
worker's back-pressure (workers.coordination.backpressure) all use it."""

from __future__ import annotations

import re

_DELTA_SECONDS = re.compile(r"[ \t]*([0-9]{1,10})")


def retry_after_seconds(value: str | None) -> float | None:
    """The delta-seconds of a Retry-After header value ("120 (busy);duration=60" -> 120.0);
    None when absent or not starting with a number."""
    if value is None:
        return None
    match = _DELTA_SECONDS.match(value)
    return float(match.group(1)) if match else None
