"""CdrWriter: a background thread that writes transitions, CDRs and outbox events in batches,
and holds them in a bounded buffer while the database is down.

`submit_*` never blocks and never touches the database, so the asyncio signaling loop calls it
directly. The thread takes up to `batch_size` items (waiting up to `linger` seconds for a batch
to fill), writes them in one transaction through the Repository (tenacity retries transient
errors), and only then drops them from the buffer. When the retries run out, the database is
down: the batch stays at the head of the buffer, new items queue behind it (up to
`max_pending`), and the thread tries again every `outage_pause` seconds until it is back.
A batch refused because of its data (a CHECK violation, a bad value) is written item by item
so only the bad items are rejected (logged and counted), never the whole batch; any other
database error (a missing table, a server fault) is treated like an outage: nothing is dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc

from models import operations
from models.enums import LegState
from models.operations import PendingCdr, PendingOutboxEvent, Transition
from models.repository import Repository
from models.transient import is_transient
from sipstack.cdr import CdrRecord

log = logging.getLogger(__name__)

Item = Transition | PendingCdr | PendingOutboxEvent


class WriterBufferFull(RuntimeError):
    """The writer's buffer is full (the database has been down for a while): shed load."""


@dataclass
class WriterStats:
    cdrs_written: int = 0  # new rows (a repeated CDR is not counted)
    cdrs_submitted: int = 0
    transitions_applied: int = 0
    transitions_submitted: int = 0
    outbox_written: int = 0
    batches: int = 0
    outages: int = 0
    rejected: int = 0  # items the database refused for good (logged with the reason)


class CdrWriter:
    def __init__(
        self,
        repository: Repository,
        *,
        worker: str,
        max_pending: int = 100_000,
        batch_size: int = 500,
        linger: float = 0.02,
        outage_pause: float = 1.0,
    ) -> None:
        if max_pending < 10 or batch_size < 1:
            raise ValueError("max_pending must be at least 10 and batch_size at least 1")
        self.repository = repository
        self.worker = worker
        self.max_pending = max_pending
        # Transitions and events stop being taken a little before CDRs do, so a full buffer
        # still has room for the records that say how each call ended.
        self._non_cdr_limit = max_pending - max(1, max_pending // 5)
        self.batch_size = batch_size
        self.linger = linger
        self.outage_pause = outage_pause
        self.stats = WriterStats()
        self._buffer: deque[tuple[int, Item]] = deque()
        self._condition = threading.Condition()
        self._submitted_seq = 0
        self._written_seq = 0
        self._healthy = True
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- caller side (any thread, including the asyncio loop) ---------------------------------

    def start(self) -> CdrWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
            self._thread.start()
        return self

    def submit_cdr(self, record: CdrRecord, *, leg_id: uuid.UUID | str | None = None) -> None:
        """Queue a leg's CDR; raises WriterBufferFull when the buffer is full."""
        pending = PendingCdr(record, self.worker, operations.as_uuid(leg_id) if leg_id else None)
        self._submit(pending, self.max_pending)

    def submit_transition(
        self, leg_id: uuid.UUID | str, state: LegState | str, at: float | datetime, **fields: Any
    ) -> None:
        """Queue a leg transition (same fields as Repository.record_transition); state and field
        names are checked here, in the caller."""
        self._submit(Transition.make(leg_id, state, at, **fields), self._non_cdr_limit)

    def submit_outbox_event(self, trunk: str, event_id: str, payload: Mapping[str, Any]) -> None:
        self._submit(PendingOutboxEvent(trunk, event_id, dict(payload)), self._non_cdr_limit)

    @property
    def pending(self) -> int:
        with self._condition:
            return len(self._buffer)

    @property
    def healthy(self) -> bool:
        """False while the database is unreachable (a worker may stop claiming new legs)."""
        return self._healthy

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is written (or rejected)."""
        with self._condition:
            target = self._submitted_seq
            self._condition.notify_all()
            return self._condition.wait_for(lambda: self._written_seq >= target, timeout)

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Write what is buffered (waiting up to `timeout`), then stop the thread. False when
        items are left unwritten; `unwritten()` returns them."""
        flushed = self.flush(timeout) if self._thread is not None else self.pending == 0
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(self.outage_pause, 1.0) + 5.0)
            self._thread = None
        if not flushed:
            log.error("CDR writer stopped with %d items not written", self.pending)
        return flushed

    def unwritten(self) -> list[Item]:
        with self._condition:
            return [item for _, item in self._buffer]

    def _submit(self, item: Item, limit: int) -> None:
        with self._condition:
            if self._stopping:
                raise RuntimeError("the CDR writer is stopped")
            if len(self._buffer) >= limit:
                raise WriterBufferFull(
                    f"CDR writer buffer full ({len(self._buffer)} items pending, limit {limit}); "
                    f"database {'reachable' if self._healthy else 'unreachable'}"
                )
            self._submitted_seq += 1
            self._buffer.append((self._submitted_seq, item))
            if isinstance(item, PendingCdr):
                self.stats.cdrs_submitted += 1
            elif isinstance(item, Transition):
                self.stats.transitions_submitted += 1
            self._condition.notify_all()

    # --- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._write(batch)
            except Exception as error:
                if _refuses_the_item(error):
                    self._isolate(batch)
                    continue
                self._enter_outage(error)
                if self._stopping:
                    return  # stop() gave up waiting; unwritten() holds what is left
                continue
            self._done(len(batch))

    def _next_batch(self) -> list[Item] | None:
        with self._condition:
            self._condition.wait_for(lambda: self._buffer or self._stopping)
            if not self._buffer:
                return None
            deadline = time.monotonic() + self.linger
            while len(self._buffer) < self.batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._condition.wait(remaining):
                    break
            count = min(len(self._buffer), self.batch_size)
            return [self._buffer[index][1] for index in range(count)]

    def _write(self, batch: list[Item]) -> None:
        applied, written, queued = self.repository.run(_write_batch, batch)
        if not self._healthy:
            log.warning("database reachable again; writing %d buffered items", self.pending)
        self._healthy = True
        self.stats.batches += 1
        self.stats.transitions_applied += applied
        self.stats.cdrs_written += written
        self.stats.outbox_written += queued

    def _enter_outage(self, error: BaseException) -> None:
        if self._healthy:
            self.stats.outages += 1
            why = "unreachable" if is_transient(error) else "failing (not the data's fault)"
            log.error("database %s, buffering writes: %s", why, error)
        self._healthy = False
        pause = self.outage_pause * (0.5 + random.random())
        with self._condition:
            self._condition.wait_for(lambda: self._stopping, pause)

    def _isolate(self, batch: list[Item]) -> None:
        """Write a refused batch one item per transaction; reject only the refused items."""
        for item in batch:
            try:
                self._write([item])
            except Exception as error:
                if not _refuses_the_item(error):
                    self._enter_outage(error)
                    return  # the rest stays at the head of the buffer
                self.stats.rejected += 1
                log.error("database refused %s, dropped: %s", _describe(item), error)
            self._done(1)

    def _done(self, count: int) -> None:
        with self._condition:
            for _ in range(count):
                sequence, _item = self._buffer.popleft()
                self._written_seq = sequence
            self._condition.notify_all()


def _refuses_the_item(error: BaseException) -> bool:
    """True when the error is about the data written (a constraint, a bad value), so writing
    the items one by one finds the culprit. Anything else (connection lost, a missing table
    before `outbound migrate`, a server fault) keeps every item buffered until it clears."""
    if is_transient(error):
        return False
    if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError):
        return True
    # Raised before reaching the server: a value our bind processing refused.
    return not isinstance(error, sa_exc.DBAPIError)


def _describe(item: Item) -> str:
    if isinstance(item, PendingCdr):
        return f"CDR call_id={item.record.call_id!r}"
    if isinstance(item, Transition):
        return f"transition of leg {item.leg_id} to {item.state.value!r}"
    return f"outbox event {item.event_id!r}"


def _write_batch(session: Any, batch: list[Item]) -> tuple[int, int, int]:
    """One transaction: transitions (in order per leg), then CDRs, then outbox events."""
    transitions = [item for item in batch if isinstance(item, Transition)]
    cdrs = [item for item in batch if isinstance(item, PendingCdr)]
    events = [item for item in batch if isinstance(item, PendingOutboxEvent)]
    applied = operations.apply_transitions(session, transitions) if transitions else 0
    written = operations.insert_cdrs(session, cdrs)
    return applied, written, operations.insert_outbox_events(session, events)
