"""Hand claimed legs' dial requests from the Celery task threads to the signaling loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable

from sipstack.dial import DialRequest
from sipstack.errors import LocalProtocolError
from sipstack.outcome import LocalCause
from workers.observability.attach import leg_fields
from workers.runtime.book import LegContext
from workers.signaling.manager import SignalingService

log = logging.getLogger(__name__)

# A worker that stops refuses new INVITEs: its own limit (capacity), another worker may dial.
_STOPPING = LocalCause.CONCURRENCY_LIMIT

# (leg, request) -> its Call-ID, on the loop (workers.signaling.targets: RFC 3263 location)
Dial = Callable[[LegContext, DialRequest], Awaitable[str]]


class DialFeeder:
    """Hands claimed legs' dial requests from the task threads to the signaling loop.

    Requests wait in a queue; one loop wake-up sends the INVITEs queued by then, instead of a
    wake-up, a Task and a future per dial with a task thread blocked on each. They go out
    `slice_size` at a time with a loop turn in between, so responses are read while a burst
    is being sent (a full socket buffer would drop them and cause retransmissions). Task
    threads `reserve` room before claiming: with `max_queued` dials waiting or reserved they
    block (up to `max_wait`), so legs stay queued in PostgreSQL and the broker rather than
    claimed and not yet dialed.
    A request the loop refuses (or one left when the loop is gone) goes to `on_refused`,
    which ends the leg with an event and a CDR: a claimed leg never stays without an end.
    `prepare` runs on the loop just before each INVITE (STIR/SHAKEN signing: a fresh `iat`);
    a ValueError from it refuses that dial.
    """

    def __init__(
        self,
        signaling: SignalingService,
        on_refused: Callable[[LegContext, str, LocalCause], object],
        *,
        slice_size: int = 32,
        max_queued: int = 128,
        max_wait: float = 10.0,
        dial: Dial | None = None,
        prepare: Callable[[LegContext, DialRequest], DialRequest] | None = None,
    ) -> None:
        self._signaling = signaling
        self._prepare = prepare
        self._on_refused = on_refused
        self._dial = dial  # None: LegManager.dial (the request's own next hop)
        self._slice_size = slice_size
        self._max_queued = max_queued
        self._max_wait = max_wait
        self._queue: deque[tuple[LegContext, DialRequest]] = deque()
        self._condition = threading.Condition()
        self._reserved = 0
        self._scheduled = False
        self._closed = False
        self.slices = 0

    def reserve(self, count: int) -> int:
        """Hold room for `count` dials, blocking (up to `max_wait`) while the queue and other
        threads' reservations fill it: task threads reserve before they take limits and
        claim, so no more legs are claimed than the loop is about to dial. Each `submit`
        uses one reserved place; `release` gives back the ones not used."""
        with self._condition:
            self._condition.wait_for(
                lambda: len(self._queue) + self._reserved + count
                <= max(self._max_queued, count) or self._closed,
                self._max_wait,
            )
            self._reserved += count
        return count

    def release(self, count: int) -> None:
        if count <= 0:
            return
        with self._condition:
            self._reserved = max(0, self._reserved - count)
            self._condition.notify_all()

    def submit(self, context: LegContext, request: DialRequest) -> None:
        """Queue a dial (any thread); the loop sends it soon after."""
        with self._condition:
            self._reserved = max(0, self._reserved - 1)
            closed = self._closed
            if not closed:
                self._queue.append((context, request))
                if self._scheduled:
                    return
                self._scheduled = True
        if closed:
            self._on_refused(context, "INVITE not sent: the signaling loop has stopped", _STOPPING)
            return
        sending = self._send_queued()
        try:
            self._signaling.submit(sending)
        except RuntimeError as error:  # the loop is closed: nothing will send these
            sending.close()
            self._refuse_all(f"INVITE not sent: {error}")

    def close(self) -> None:
        """Refuse whatever is still queued (after the loop has stopped)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._refuse_all("INVITE not sent: the worker stopped first")

    def _take(self, limit: int | None) -> list[tuple[LegContext, DialRequest]]:
        with self._condition:
            count = len(self._queue) if limit is None else min(limit, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            if not self._queue:
                self._scheduled = False  # the next submit schedules a new sender
            self._condition.notify_all()
        return batch

    def _refuse_all(self, reason: str) -> None:
        for context, _request in self._take(None):
            self._on_refused(context, reason, _STOPPING)

    async def _send_queued(self) -> None:
        manager = self._signaling.manager
        while batch := self._take(self._slice_size):
            self.slices += 1
            for context, request in batch:
                try:
                    if self._prepare is not None:
                        request = self._prepare(context, request)
                    if self._dial is None:
                        await manager.dial(request)
                    else:
                        await self._dial(context, request)
                except LocalProtocolError as error:
                    self._on_refused(context, f"INVITE not sent: {error}", LocalCause.BAD_TARGET)
                except ValueError as error:  # from prepare: a number SHAKEN cannot sign
                    self._on_refused(context, f"INVITE not sent: {error}", LocalCause.BAD_TARGET)
                except Exception as error:
                    self._on_refused(context, f"INVITE not sent: {error.__class__.__name__}",
                                     LocalCause.TRANSPORT_ERROR)
                    log.exception("dialing failed", extra=leg_fields(context))
            if not self._scheduled:
                return
            await asyncio.sleep(0)  # a loop turn: read what arrived before the next slice
