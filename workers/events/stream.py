"""DialEvents on Redis streams, one import for callers: the entry format
(workers.events.entries), the publisher with its outbox (workers.events.publisher,
workers.events.outbox) and the reader (workers.events.reader)."""

from __future__ import annotations

from workers.events.entries import (
    REDIS_UNAVAILABLE,
    STREAM_FIELDS,
    TERMINAL_STATES,
    StreamEvent,
    decode_fields,
    format_at,
    parse_at,
)
from workers.events.outbox import (
    PostgresOutbox,
    count_unpublished,
    fetch_unpublished,
    insert_outbox,
    last_event_seqs,
    mark_published,
    outbox_rows,
)
from workers.events.publisher import EventPublisher, MemoryOutbox, Outbox, OutboxFull, StreamWriter
from workers.events.reader import EventReader, ReceivedEvent

__all__ = [
    "REDIS_UNAVAILABLE", "STREAM_FIELDS", "TERMINAL_STATES", "EventPublisher", "EventReader",
    "MemoryOutbox", "Outbox", "OutboxFull", "PostgresOutbox", "ReceivedEvent", "StreamEvent",
    "StreamWriter", "count_unpublished", "decode_fields", "fetch_unpublished", "format_at",
    "insert_outbox", "last_event_seqs", "mark_published", "outbox_rows", "parse_at",
]
