"""Takes the JSON dial queue off a Redis broker in atomic batches, instead of kombu.

kombu's Redis transport pops a message (BRPOP) and records it as unacknowledged in a second
command, so a worker killed between the two loses it. Here one thread per worker moves
entries with BLMOVE (then up to a batch more in one Lua call) from `dial.<trunk>.json` into an
in-flight list of its own, hands the batch to `take_batch`, and settles it in one MULTI/EXEC:
taken entries leave the in-flight list, the ones put back go to the consuming end of the
queue. In-flight lists of dead workers (and this worker's own on a clean stop) go back to the
queue, atomically, so an entry is always in exactly one list.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from workers.config.settings import Settings
from workers.runtime.claims import Settle, TakeBatch

log = logging.getLogger(__name__)

# KEYS: queue, inflight; ARGV: how many more. The entries moved, oldest first.
_MOVE_MORE = """
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not entry then break end
  out[#out + 1] = entry
end
return out
"""

# KEYS: inflight, queue, owners set; ARGV: owner. Newest first to the consuming (right) end,
# so the oldest entry is again the next one taken. Returns how many went back.
_RESTORE = """
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('SREM', KEYS[3], ARGV[1])
return moved
"""

MAX_BACKOFF = 5.0
FIRST_BACKOFF = 0.1


def decode_entry(entry: bytes) -> bytes:
    """The dial message in a queue entry: the body of kombu's Redis envelope, or the entry
    itself (a bare JSON body, or bytes the intake will refuse)."""
    try:
        envelope = json.loads(entry)
    except (ValueError, UnicodeDecodeError):
        return entry
    if not (isinstance(envelope, dict) and "body" in envelope
            and isinstance(envelope.get("properties"), dict)):
        return entry
    body = envelope["body"]
    if not isinstance(body, str):
        return entry
    if envelope["properties"].get("body_encoding") == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return entry
    return body.encode()


def owners_key(settings: Settings, trunk: str) -> str:
    """The set of workers with an in-flight list for the trunk (so others can find it)."""
    return settings.key("intake-owners", trunk)


def inflight_key(settings: Settings, trunk: str, owner: str) -> str:
    return settings.key("intake", trunk, owner)


def inflight_entries(client: redis.Redis[Any], settings: Settings, trunk: str) -> int:
    """How many entries the trunk's workers have moved off the queue and not yet settled."""
    owners = client.smembers(owners_key(settings, trunk))
    return sum(int(client.llen(inflight_key(settings, trunk, o.decode()))) for o in owners)


class RedisIntake:
    """One worker's intake of one trunk's JSON queue on a Redis broker."""

    def __init__(
        self, client: redis.Redis[Any], settings: Settings, *, trunk: str, queue: str,
        owner: str, take_batch: TakeBatch, dead: Callable[[Sequence[str]], list[str]],
        batch_size: int = 128, block_timeout: float = 1.0, recover_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._redis = client
        self.queue = queue
        self.owner = owner
        self.owners_key = owners_key(settings, trunk)
        self._settings = settings
        self._trunk = trunk
        self.inflight = self.inflight_key(owner)
        self._take = take_batch
        self._dead = dead
        self.batch_size = batch_size
        self._block_timeout = block_timeout
        self._recover_every = recover_every
        self._clock = clock
        self._next_recovery = 0.0
        self._backoff = FIRST_BACKOFF
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._move_more = client.register_script(_MOVE_MORE)
        self._restore = client.register_script(_RESTORE)

    def inflight_key(self, owner: str) -> str:
        return inflight_key(self._settings, self._trunk, owner)

    def start(self) -> RedisIntake:
        self._stopping.clear()
        self._next_recovery = 0.0  # registers and recovers first
        self._thread = threading.Thread(target=self._run, name=f"intake {self.queue}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking, then put this worker's unprocessed entries back on the queue."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        try:
            moved = self.restore(self.owner)
        except redis.RedisError:
            log.exception("intake %s: could not put in-flight entries back; a live worker "
                          "restores them once this one's heartbeat is gone", self.queue)
            return
        if moved:
            log.info("intake %s: put %d untaken entries back", self.queue, moved)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._clock() >= self._next_recovery:
                    self.register()  # again: a reset broker Redis forgot it
                    self.recover()
                    self._next_recovery = self._clock() + self._recover_every
                verdicts = self.run_once()
                if verdicts and all(v is Settle.REQUEUE for v in verdicts):
                    self._back_off()  # cannot take now (stopping, PostgreSQL away): no spin
                else:
                    self._backoff = FIRST_BACKOFF
            except redis.RedisError as exc:
                log.warning("intake %s: Redis error (%s); retrying in %.1f s",
                            self.queue, exc, self._backoff)
                self._back_off()
            except Exception:
                log.exception("intake %s: unexpected error", self.queue)
                self._back_off()

    def _back_off(self) -> None:
        self._stopping.wait(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def register(self) -> None:
        self._redis.sadd(self.owners_key, self.owner)

    def run_once(self) -> list[Settle]:
        """Wait up to the block timeout for one batch, take it and settle it."""
        first = self._redis.blmove(self.queue, self.inflight, self._block_timeout,
                                   "RIGHT", "LEFT")
        if not isinstance(first, bytes):
            return []
        entries: list[bytes] = [first]
        if self.batch_size > 1:
            entries.extend(self._move_more(keys=[self.queue, self.inflight],
                                           args=[self.batch_size - 1]))
        verdicts = self._take_safely(entries)
        self._settle(entries, verdicts)
        return verdicts

    def _take_safely(self, entries: list[bytes]) -> list[Settle]:
        try:
            verdicts = list(self._take([decode_entry(e) for e in entries], time.time()))
        except Exception:
            log.exception("intake %s: taking a batch of %d failed; putting it back",
                          self.queue, len(entries))
            return [Settle.REQUEUE] * len(entries)
        if len(verdicts) != len(entries):
            log.error("intake %s: %d verdicts for %d entries; putting the batch back",
                      self.queue, len(verdicts), len(entries))
            return [Settle.REQUEUE] * len(entries)
        return verdicts

    def _settle(self, entries: list[bytes], verdicts: list[Settle]) -> None:
        # Retried until it goes through: until then the entries are safe in the in-flight
        # list, and an entry taken twice is found to be a repeat.
        while True:
            try:
                with self._redis.pipeline(transaction=True) as pipe:
                    for entry in entries:
                        pipe.lrem(self.inflight, 1, entry)
                    back = [e for e, v in zip(entries, verdicts, strict=True)
                            if v is Settle.REQUEUE]
                    if back:  # newest first, so the oldest is again the next one taken
                        pipe.rpush(self.queue, *reversed(back))
                    pipe.execute()
                return
            except redis.RedisError as exc:
                if self._stopping.is_set():
                    raise
                log.warning("intake %s: settling failed (%s); retrying in %.1f s",
                            self.queue, exc, self._backoff)
                self._back_off()

    def restore(self, owner: str) -> int:
        """Move all of `owner`'s in-flight entries back to the queue and forget the list."""
        moved = self._restore(keys=[self.inflight_key(owner), self.queue, self.owners_key],
                              args=[owner])
        return int(moved)

    def recover(self) -> int:
        """Put back the in-flight entries of every dead worker of the trunk."""
        others = sorted(o.decode() if isinstance(o, bytes) else str(o)
                        for o in self._redis.smembers(self.owners_key))
        others = [o for o in others if o != self.owner]
        moved = 0
        for owner in self._dead(others):
            count = self.restore(owner)
            if count:
                log.warning("intake %s: put back %d entries of dead worker %s",
                            self.queue, count, owner)
            moved += count
        return moved
