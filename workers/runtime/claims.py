"""The claim coalescer: JSON dial messages stored, admitted and claimed in batches, acked after.

One message per call used to cost a transaction, a Redis script and a claim of its own, one
after another on Celery's consumer thread. `ClaimCoalescer` buffers deliveries on the consumer
thread and hands them over as one batch when `batch_size` are waiting or `delay` seconds after
the first; `DialIntake.take` then validates every message (bad ones refused as before: a
`rejected` event naming the fields and a dead letter, nothing stored), stores all legs in one
INSERT … ON CONFLICT DO NOTHING, and admits, claims and hands them to the loop in one
`handle_dial_batch`. Each delivery is acknowledged only after its legs are stored (requeued
when they could not be); legs the trunk's limits refuse are republished as a leg-id task
message before the ack. The batch work runs on one `claims` thread while the consumer reads
on, and while a batch is in flight the next one keeps filling: the busier the worker, the
bigger its batches. Acks and requeues go back through `Scheduler.call_soon` to the consumer
thread, since kombu's channels are not thread-safe.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from models import operations
from models.dial_fields import InvalidDialRequest
from models.enums import TERMINAL_STATES
from models.transient import is_transient
from workers.celery.app import DIAL_BATCH_TASK, dial_queue_name
from workers.contract.dial_message import DialMessage, message_leg_id, parse_dial_message
from workers.contract.intake import describe, dump_item, rejected_event, salvage
from workers.observability.log_format import call_fields
from workers.runtime.worker import WorkerRuntime

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_BODY = 1000  # a JSON array of dial messages is one transaction


class Settle(enum.Enum):
    """What happens to a delivery once its batch was taken."""

    ACK = "ack"  # stored (or refused, or a repeat): done with it
    REQUEUE = "requeue"  # nothing of it is stored: the broker gives it to us again


class Delivery(Protocol):
    """A broker message (kombu's `Message`)."""

    def ack(self) -> None: ...
    def requeue(self) -> None: ...


class Scheduler(Protocol):
    """The consumer thread's event loop (kombu's `Hub`): `call_later` from that thread,
    `call_soon` from any thread."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any: ...
    def call_soon(self, callback: Callable[[], None]) -> Any: ...


TakeBatch = Callable[[Sequence[bytes], float], Sequence[Settle]]


class ClaimCoalescer:
    """Buffers deliveries and takes them in batches (see the module docstring).

    `threaded=False` takes a batch inline on the calling thread (no event loop to hand acks
    back to, and deterministic tests).
    """

    def __init__(
        self, take: TakeBatch, scheduler: Scheduler, *, batch_size: int = 128,
        delay: float = 0.005, threaded: bool = True, clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1 or not delay > 0:
            raise ValueError(f"batch_size must be >= 1 and delay > 0, got {batch_size}, {delay}")
        self._take = take
        self._scheduler = scheduler
        self._batch_size = batch_size
        self._delay = delay
        self._clock = clock
        self._buffer: list[tuple[bytes, Delivery]] = []
        self._first_at = 0.0
        self._timer: Any = None
        self._due = False  # the delay passed while a batch was in flight
        self._busy = False
        self._done: deque[tuple[list[tuple[bytes, Delivery]], Sequence[Settle]]] = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="claims") if threaded else None
        self.batches = 0

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add(self, raw: bytes, delivery: Delivery) -> None:
        """A delivery from the broker (consumer thread)."""
        if not self._buffer:
            self._first_at = self._clock()
            self._arm()
        self._buffer.append((raw, delivery))
        if len(self._buffer) >= self._batch_size:
            self.flush()

    def flush(self) -> None:
        """Take what is buffered now, or as soon as the batch in flight is done."""
        self._disarm()
        if self._busy:
            self._due = True
            return
        self._due = False
        batch, self._buffer = self._buffer[:self._batch_size], self._buffer[self._batch_size:]
        if not batch:
            return
        first_at, self._first_at = self._first_at, self._clock()
        if self._buffer:
            self._arm()
        self.batches += 1
        raws = [raw for raw, _ in batch]
        if self._pool is None:
            self._done.append((batch, self._take_safely(raws, first_at)))
            self._settle_done()
            return
        self._busy = True
        future = self._pool.submit(self._take_safely, raws, first_at)
        future.add_done_callback(lambda done: self._finished(batch, done))

    def close(self) -> None:
        """Requeue what is buffered, wait for the batch in flight and settle it (consumer
        thread, while the channel is still open)."""
        self._disarm()
        buffered, self._buffer = self._buffer, []
        for _, delivery in buffered:
            _settle(delivery, Settle.REQUEUE)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._settle_done()

    def _finished(self, batch: list[tuple[bytes, Delivery]], done: Future[Sequence[Settle]]
                  ) -> None:
        self._done.append((batch, done.result()))  # _take_safely never raises
        self._scheduler.call_soon(self._settle_done)

    def _settle_done(self) -> None:
        while self._done:
            try:
                batch, verdicts = self._done.popleft()
            except IndexError:  # close() took it
                return
            for (_, delivery), verdict in zip(batch, verdicts, strict=True):
                _settle(delivery, verdict)
            self._busy = False
        if self._buffer and (self._due or len(self._buffer) >= self._batch_size):
            self.flush()

    def _take_safely(self, raws: list[bytes], first_at: float) -> Sequence[Settle]:
        try:
            verdicts = self._take(raws, first_at)
            if len(verdicts) != len(raws):
                raise RuntimeError(f"{len(verdicts)} verdicts for {len(raws)} deliveries")
            return verdicts
        except Exception:
            log.exception("a batch of %d dial message(s) was not taken; it goes back to the "
                          "queue", len(raws))
            return [Settle.REQUEUE] * len(raws)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._scheduler.call_later(self._delay, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()


def _settle(delivery: Delivery, verdict: Settle) -> None:
    try:
        if verdict is Settle.ACK:
            delivery.ack()
        else:
            delivery.requeue()
    except Exception as error:  # the channel closed: the broker redelivers it
        log.warning("dial message not %sed: %s", verdict.value, error)


class InlineScheduler:
    """A stand-in for the event loop when there is none: timers never fire, so every
    delivery is taken at once (`batch_size` 1)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        return None

    def call_soon(self, callback: Callable[[], None]) -> None:
        callback()


class DialIntake:
    """Takes a batch of JSON dial messages for one worker runtime (docs/dial-message.md)."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.trunk = runtime.trunk

    def take(self, raws: Sequence[bytes], enqueued_at: float | None = None) -> list[Settle]:
        """One verdict per raw body (a dial message or a JSON array of them).

        A message past its `not_after` is stored, claimed and ended as `expired` without an
        INVITE. The leg id is derived from (trunk, correlation_id), so a repeated or
        redelivered message, in this batch or another, finds the same row and loses the
        claim: one leg, one CDR and one terminal event per correlation_id.
        """
        runtime = self.runtime
        if not runtime.accepting:
            return [Settle.REQUEUE] * len(raws)
        parsed: list[list[DialMessage] | None] = []
        for raw in raws:
            try:
                parsed.append(self._parse(raw))
            except Exception:  # a refusal that could not be recorded (Redis away)
                log.exception("dial message not refused; it goes back to the queue")
                parsed.append(None)
        stored = [(message_leg_id(m.trunk, m.correlation_id), m)
                  for messages in parsed if messages for m in messages]
        kept = self._store_and_claim(stored, enqueued_at) if stored else True
        return [Settle.REQUEUE if messages is None or (messages and not kept) else Settle.ACK
                for messages in parsed]

    def _store_and_claim(self, stored: list[tuple[Any, DialMessage]],
                         enqueued_at: float | None) -> bool:
        """False: nothing is safely stored, requeue the batch's messages with legs."""
        runtime = self.runtime
        try:
            legs = runtime.repository.run_connection(operations.store_dial_legs, stored)
        except Exception as error:
            if not is_transient(error):
                raise  # the coalescer logs it and requeues the batch
            log.warning("PostgreSQL unavailable while storing %d dial message(s): %s",
                        len(stored), error.__class__.__name__)
            return False
        waiting = [(str(leg.leg_id), leg.correlation_id) for leg in legs
                   if leg.state not in TERMINAL_STATES]
        runtime.stats["duplicates"] += len(stored) - len(waiting)  # ended, or twice in here
        if not waiting:
            return True
        outcome = runtime.handle_dial_batch(self.trunk.name, waiting, enqueued_at)
        if outcome.requeue:
            return False
        if outcome.retry:
            # the legs are stored: they wait as a leg-id task message, published before the ack
            self.retry_dials_later(outcome.retry, outcome.retry_after)
        return True

    def _parse(self, raw: bytes) -> list[DialMessage]:
        """The body's valid messages; the bad ones are refused here."""
        try:
            decoded = json.loads(raw)
        except ValueError as error:
            self._reject(raw, {"request": f"not JSON: {error}"})
            return []
        items = decoded if isinstance(decoded, list) else [decoded]
        if len(items) > MAX_MESSAGES_PER_BODY:
            self._reject(raw, {"request": f"{len(items)} messages in one body (at most "
                                          f"{MAX_MESSAGES_PER_BODY})"})
            return []
        messages: list[DialMessage] = []
        for item in items:
            try:
                messages.append(self._resolve(item))
            except InvalidDialRequest as error:
                self._reject(raw if item is decoded else dump_item(item), error.errors)
        return messages

    def _resolve(self, item: Any) -> DialMessage:
        """The validated message with its `to` as a Request-URI of this worker's trunk."""
        message = parse_dial_message(item)
        if message.trunk != self.trunk.name:
            raise InvalidDialRequest(
                {"trunk": f"{message.trunk!r} arrived on the queue of {self.trunk.name!r}"})
        self.runtime.failover.check_route(message)
        return message.with_request_uri(self.trunk.request_uri(message.to))

    def _reject(self, raw: bytes, errors: dict[str, str]) -> None:
        correlation_id, scenario = salvage(raw)
        event = rejected_event(self.trunk.name, correlation_id, scenario, errors)
        self.runtime.dead_letters(raw, describe(errors))
        self.runtime.stream_writer.write([event])
        self.runtime.stats["rejected"] += 1
        log.warning("dial message rejected: %s", describe(errors),
                    extra=call_fields(correlation_id=event.correlation_id,
                                      trunk=self.trunk.name))

    def retry_dials_later(self, legs: Sequence[tuple[str, str]], countdown: float) -> None:
        """Stored legs the limits cannot admit yet go back as a leg-id batch task message
        (published before the JSON message is acknowledged: nothing is dropped between)."""
        app = self.runtime.app
        if app is None:
            raise RuntimeError("no Celery app to publish the retry with")
        queue = dial_queue_name(self.trunk.name)
        app.send_task(
            DIAL_BATCH_TASK, kwargs={"trunk": self.trunk.name,
                                     "legs": [list(leg) for leg in legs], "enqueued_at": None},
            queue=queue, routing_key=queue, countdown=countdown, ignore_result=True,
        )
