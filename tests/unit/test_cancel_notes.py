"""Cancel notes for dial messages not taken yet: stored per (trunk, correlation_id), read in one
MGET, kept for a bounded time, unreadable values still count as a cancel."""

from __future__ import annotations

from typing import Any

import fakeredis
import redis

from workers.config.settings import Settings
from workers.coordination.cancel_notes import NOTE_TTL, leave_note, note_key, read_notes


def client() -> redis.Redis[Any]:
    fake: redis.Redis[Any] = fakeredis.FakeRedis()
    return fake


def test_a_note_is_read_back_for_its_trunk_and_correlation_id_only() -> None:
    settings, store = Settings(), client()
    note = leave_note(store, settings, "t1", "order-1", "cancel")
    notes = read_notes(store, settings, "t1", ["order-1", "order-2"])
    assert notes == {"order-1": note}
    assert read_notes(store, settings, "t2", ["order-1"]) == {}
    assert note.reason == "cancel requested before a worker took the dial message"
    assert 0 < store.ttl(note_key(settings, "t1", "order-1")) <= NOTE_TTL


def test_a_repeat_keeps_the_first_note_and_garbage_still_cancels() -> None:
    settings, store = Settings(), client()
    first = leave_note(store, settings, "t1", "order-1", "hangup")
    leave_note(store, settings, "t1", "order-1", "cancel")
    assert read_notes(store, settings, "t1", ["order-1"])["order-1"] == first
    store.set(note_key(settings, "t1", "order-9"), b"{not json")
    assert read_notes(store, settings, "t1", ["order-9"])["order-9"].action == "cancel"
    assert read_notes(store, settings, "t1", []) == {}
