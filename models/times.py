"""Conversions between the core's epoch-second floats and timezone-aware datetimes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def to_datetime(value: float | datetime) -> datetime:
    """Epoch seconds (the `now` the core was given) or a datetime, as an aware UTC datetime.

    A naive datetime is taken as UTC rather than the host's zone, so the same input means the
    same instant on every machine.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


def optional_datetime(value: float | datetime | None) -> datetime | None:
    return None if value is None else to_datetime(value)


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """Parse a report bound: ISO 8601 (`2024-05-01`, `2024-05-01T10:00`, with or without a
    zone; naive is UTC), `now`, or an age such as `90m`, `24h`, `7d` (that long before now)."""
    reference = now or utc_now()
    cleaned = text.strip()
    if cleaned.lower() == "now":
        return reference
    relative = _RELATIVE.match(cleaned.lower())
    if relative:
        amount, unit = relative.groups()
        return reference - timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
    try:
        parsed = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use ISO 8601 (2024-05-01T10:00Z), 'now' or an age "
            "such as 90m, 24h, 7d"
        ) from None
    return to_datetime(parsed)
