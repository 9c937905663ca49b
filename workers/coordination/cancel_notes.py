"""Cancel notes: a scheduler's cancel of a dial message no worker has taken yet, kept in Redis.

Before a worker takes a message there is no leg row to end, so `outbound cancel` leaves a note
keyed by (trunk, correlation_id); the worker that claims the leg reads it at hand-over and ends
the leg as `cancelled` without an INVITE. A note lives `NOTE_TTL` seconds: longer than a
message sensibly waits in a queue, and harmless after the leg ended (a correlation_id makes
one leg only, so a later message with it is a repeat anyway).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.config.settings import Settings

NOTE_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class CancelNote:
    """What was asked (`cancel` or `hangup`) and when (epoch seconds)."""

    action: str
    at: float

    @property
    def reason(self) -> str:
        return f"{self.action} requested before a worker took the dial message"


def note_key(settings: Settings, trunk: str, correlation_id: str) -> str:
    return settings.key("cancel", trunk, correlation_id)


def leave_note(client: redis.Redis[Any], settings: Settings, trunk: str,
               correlation_id: str, action: str) -> CancelNote:
    """Store the note (a repeat keeps the first one's time)."""
    note = CancelNote(action, time.time())
    key = note_key(settings, trunk, correlation_id)
    client.set(key, json.dumps({"action": note.action, "at": note.at}), ex=NOTE_TTL, nx=True)
    return note


def read_notes(client: redis.Redis[Any], settings: Settings, trunk: str,
               correlation_ids: Sequence[str]) -> dict[str, CancelNote]:
    """correlation_id -> its note, for those that have one (one MGET)."""
    if not correlation_ids:
        return {}
    values = client.mget([note_key(settings, trunk, cid) for cid in correlation_ids])
    notes: dict[str, CancelNote] = {}
    for correlation_id, value in zip(correlation_ids, values, strict=True):
        if value is None:
            continue
        try:
            data = json.loads(value)
            notes[correlation_id] = CancelNote(str(data["action"]), float(data["at"]))
        except (ValueError, KeyError, TypeError):
            notes[correlation_id] = CancelNote("cancel", 0.0)  # unreadable: still a cancel
    return notes
