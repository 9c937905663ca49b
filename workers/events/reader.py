"""Reading trunk streams: from the start or the end, alone or in a consumer group with ack,
XAUTOCLAIM for stuck entries; survives a Redis restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.config.settings import Settings
from workers.events.entries import REDIS_UNAVAILABLE, StreamEvent, decode_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    stream: str
    entry_id: str
    event: StreamEvent


class EventReader:
    """Reads trunk streams: from the start or the end, alone or in a consumer group with ack.

    Survives a Redis restart: a vanished consumer group is created again (a restarted Redis
    starts empty, so reading then starts from the first new entry).
    """

    def __init__(
        self,
        client: redis.Redis[Any],
        settings: Settings,
        trunks: Sequence[str],
        *,
        group: str | None = None,
        consumer: str = "cli",
        from_start: bool = True,
    ) -> None:
        if not trunks:
            raise ValueError("no trunk to read events from")
        self._redis = client
        self._group = group
        self._consumer = consumer
        self._from_start = from_start
        self.streams = [settings.events_stream(trunk) for trunk in trunks]
        self._positions: dict[str, str] = {}
        self._groups_ready = False
        self._own_pending_first = True

    def _reset_positions(self) -> None:
        # The end is pinned to a real entry id now: reading from '$' again on every call
        # would miss entries added between two reads.
        self._positions = {
            stream: "0-0" if self._from_start else self._last_id(stream)
            for stream in self.streams
        }

    def seek(self, position: str) -> None:
        """Read entries after `position` (an entry id; '0-0' is the start) on every stream."""
        self._positions = dict.fromkeys(self.streams, position)

    def _ensure_groups(self, start: str | None = None) -> None:
        if start is None:
            start = "0" if self._from_start else "$"
        for stream in self.streams:
            try:
                self._redis.xgroup_create(stream, self._group or "", id=start, mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._groups_ready = True

    def read(self, *, block_ms: int | None = None, count: int = 500) -> list[ReceivedEvent]:
        """The next entries (waiting up to block_ms for some when given)."""
        if self._group is None:
            if not self._positions:
                self._reset_positions()
            # '$' must be replaced by a real id after the first read or entries added between
            # two reads would be missed.
            reply = self._redis.xread(self._positions, count=count, block=block_ms)
            received = self._decode(reply)
            for item in received:
                self._positions[item.stream] = item.entry_id
            return received
        if not self._groups_ready:
            self._ensure_groups()
        try:
            if self._own_pending_first:
                # What this consumer read before and never acknowledged (it stopped or
                # crashed) comes first; '0' returns those entries without blocking.
                reply = self._redis.xreadgroup(
                    self._group, self._consumer, dict.fromkeys(self.streams, "0"), count=count
                )
                pending = self._decode(reply)
                if pending:
                    return pending
                self._own_pending_first = False
            reply = self._redis.xreadgroup(
                self._group, self._consumer, dict.fromkeys(self.streams, ">"),
                count=count, block=block_ms,
            )
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream or group vanished (Redis restarted empty): whatever is there now
            # is new to us, so the group starts at the beginning.
            self._ensure_groups(start="0")
            return []
        return self._decode(reply)

    def _last_id(self, stream: str) -> str:
        entries = self._redis.xrevrange(stream, count=1)
        if not entries:
            return "0-0"
        entry_id = entries[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def pending_claim(self, *, min_idle_ms: int, count: int = 100) -> list[ReceivedEvent]:
        """Entries another consumer of the group read but never acknowledged (XAUTOCLAIM)."""
        if self._group is None:
            return []
        if not self._groups_ready:
            self._ensure_groups()
        claimed: list[ReceivedEvent] = []
        for stream in self.streams:
            reply = self._redis.xautoclaim(
                stream, self._group, self._consumer, min_idle_time=min_idle_ms, count=count
            )
            entries = reply[1] if len(reply) > 1 else []
            claimed.extend(self._decode([[stream, entries]]))
        return claimed

    def ack(self, items: Sequence[ReceivedEvent]) -> None:
        if self._group is None or not items:
            return
        by_stream: dict[str, list[str]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item.entry_id)
        pipe = self._redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self._group, *ids)
        pipe.execute()

    def follow(self, *, block_ms: int = 1000, stop: Callable[[], bool] = lambda: False,
               reconnect_wait: float = 0.5) -> Iterator[ReceivedEvent]:
        """Read forever (until `stop()`), riding out Redis restarts."""
        while not stop():
            try:
                batch = self.read(block_ms=block_ms)
            except REDIS_UNAVAILABLE:
                self._groups_ready = False
                time.sleep(reconnect_wait)
                continue
            yield from batch

    @staticmethod
    def _decode(reply: Any) -> list[ReceivedEvent]:
        received: list[ReceivedEvent] = []
        for stream, entries in reply or []:
            stream_name = stream.decode() if isinstance(stream, bytes) else str(stream)
            for entry_id, raw in entries or []:
                if raw is None:  # trimmed away while pending
                    continue
                ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                try:
                    event = StreamEvent.from_fields(decode_fields(raw))
                except (KeyError, ValueError):
                    log.warning("skipping malformed stream entry %s %s", stream_name, ident)
                    continue
                received.append(ReceivedEvent(stream_name, ident, event))
        return received
