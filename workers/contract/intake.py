"""What the worker does with a message it cannot dial: a `rejected` event and a dead letter.

The runtime's sink, `WorkerRuntime.dead_letters(raw, why)`, is the one place a refused message
is kept. The default sink appends it to the Redis stream `<prefix>:dead:<trunk>` (fields `raw`,
`why`, `at`); a broker with a dead-letter exchange can install its own sink there to route the
copy to it instead. The helpers at the end read what can be read of a refused message.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import redis

from workers.config.settings import Settings
from workers.events.stream import StreamEvent, StreamWriter, format_at

DEAD_LETTER_MAXLEN = 100_000


class DeadLetterSink(Protocol):
    def __call__(self, raw: bytes, why: str) -> None: ...


def dead_letter_stream(settings: Settings, trunk: str) -> str:
    return f"{settings.key_prefix}:dead:{trunk}"


class RedisDeadLetters:
    """Appends refused messages, verbatim, to the trunk's dead-letter stream."""

    def __init__(self, client: redis.Redis[Any], settings: Settings, trunk: str) -> None:
        self._redis = client
        self._stream = dead_letter_stream(settings, trunk)

    def __call__(self, raw: bytes, why: str) -> None:
        self._redis.xadd(
            self._stream, {"raw": raw, "why": why, "at": format_at(time.time())},
            maxlen=DEAD_LETTER_MAXLEN, approximate=True,
        )


def describe(errors: Mapping[str, str]) -> str:
    return "; ".join(f"{name}: {problem}" for name, problem in errors.items())


def rejected_event(
    trunk: str, correlation_id: str, scenario: str, errors: Mapping[str, str]
) -> StreamEvent:
    """The terminal event of a message refused before any leg existed. A message without a
    correlation_id gets a generated rejection id (`rejected-<uuid>`) in its place."""
    rejection = uuid.uuid4().hex
    return StreamEvent(
        trunk=trunk, leg_id=f"rejected-{rejection}", seq=1, state="rejected", call_id="",
        correlation_id=correlation_id or f"rejected-{rejection}", scenario=scenario,
        reason=f"invalid dial message: {describe(errors)}", at=time.time(),
    )


def publish_rejection(writer: StreamWriter, event: StreamEvent) -> None:
    writer.write([event])


def dump_item(item: Any) -> bytes:
    """One message of a refused JSON array, as the bytes its dead letter keeps."""
    return json.dumps(item, separators=(",", ":"), default=str).encode()


def salvage(raw: bytes) -> tuple[str, str]:
    """The correlation_id and scenario of a refused message, when they can be read at all."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    correlation_id, scenario = data.get("correlation_id"), data.get("scenario")
    return (correlation_id if isinstance(correlation_id, str) else "")[:255], (
        scenario if isinstance(scenario, str) else "")[:32]
