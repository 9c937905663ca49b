"""The consumer bootstep that takes plain JSON dial messages off `dial.<trunk>.json`.

Any scheduler can publish there without Celery or Python (docs/dial-message.md). Deliveries go
to a `ClaimCoalescer` (workers/runtime/claims.py) on Celery's consumer event loop, which
stores and claims them in batches and acknowledges each once it was stored and claimed,
refused (rejected event + dead letter) or found to be a repeat; a worker that cannot take it
now (stopping, PostgreSQL away) puts it back.

On a Redis broker the JSON queue is not consumed by kombu but by a `RedisIntake` thread
(workers/celery/redis_intake.py), which cannot lose a message to a killed worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import bootsteps
from kombu.message import Message
from kombu.messaging import Consumer

from workers.celery.current import current_runtime
from workers.celery.redis_intake import RedisIntake
from workers.contract.queues import dial_message_queue, dial_message_queue_name
from workers.coordination.recovery import OwnerWatch
from workers.runtime.claims import ClaimCoalescer, DialIntake, InlineScheduler, Settle

log = logging.getLogger(__name__)

_trunk: str | None = None

# Unacknowledged JSON messages the consumer may hold, in batches: one being stored and claimed,
# one filling, two waiting, so the consumer never idles waiting for acks to free the window.
PREFETCH_BATCHES = 4


def set_trunk(trunk: str) -> None:
    global _trunk
    _trunk = trunk


def take_batch(raws: Sequence[bytes], enqueued_at: float) -> Sequence[Settle]:
    runtime = current_runtime()
    if runtime is None:
        return [Settle.REQUEUE] * len(raws)
    return DialIntake(runtime).take(raws, enqueued_at)


class DialMessageStep(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Consumes the trunk's JSON dial queue next to Celery's task queues."""

    label = "outbound dial messages"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.app = parent.app
        self.concurrency = getattr(parent.controller, "concurrency", 0) or 8
        self.hub = getattr(parent, "hub", None)
        self.coalescer: ClaimCoalescer | None = None
        self.intake: RedisIntake | None = None
        super().__init__(parent, **kwargs)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        if _trunk is None:
            return []
        runtime = current_runtime()
        if runtime is not None and runtime.broker_redis is not None:
            if self.intake is None:
                self.intake = RedisIntake(
                    runtime.broker_redis, runtime.settings, trunk=_trunk,
                    queue=dial_message_queue_name(_trunk), owner=runtime.owner,
                    take_batch=take_batch,
                    dead=OwnerWatch(runtime.redis, runtime.settings).dead,
                    batch_size=runtime.settings.claim_batch_size,
                ).start()
            return []
        settings = runtime.settings if runtime is not None else None
        batch_size = settings.claim_batch_size if settings is not None else 128
        delay = settings.claim_batch_delay if settings is not None else 0.005
        if self.hub is None:  # no event loop: every delivery taken at once, acks inline
            self.coalescer = ClaimCoalescer(take_batch, InlineScheduler(), batch_size=1,
                                            delay=delay, threaded=False)
        else:
            self.coalescer = ClaimCoalescer(take_batch, self.hub, batch_size=batch_size,
                                            delay=delay)
        tasks = int(self.app.conf.worker_prefetch_multiplier) * int(self.concurrency)
        consumer = Consumer(  # type: ignore[no-untyped-call]
            channel, queues=[dial_message_queue(_trunk)], callbacks=[self.on_message],
            accept=None, no_ack=False,
            prefetch_count=max(PREFETCH_BATCHES * self.coalescer.batch_size, tasks, 1),
        )
        consumer.on_decode_error = self.on_decode_error
        return [consumer]

    def on_message(self, body: Any, message: Message) -> None:
        self._add(message)

    def on_decode_error(self, message: Message, error: Exception) -> None:
        # kombu could not decode the body (not JSON, a wrong content type): the intake
        # refuses it like any other bad message, from the raw bytes.
        self._add(message)

    def _add(self, message: Message) -> None:
        body = message.body
        raw = body if isinstance(body, bytes) else str(body).encode()
        if self.coalescer is None:
            message.requeue()  # type: ignore[no-untyped-call]
            return
        self.coalescer.add(raw, message)

    def stop(self, parent: Any) -> None:
        self._close_coalescer()
        super().stop(parent)

    def shutdown(self, parent: Any) -> None:
        self._close_coalescer()
        super().shutdown(parent)

    def _close_coalescer(self) -> None:
        intake, self.intake = self.intake, None
        if intake is not None:
            intake.stop()  # before the runtime drains: what it has not taken goes back
        coalescer, self.coalescer = self.coalescer, None
        if coalescer is not None:
            coalescer.close()  # before the channel closes: its acks still go out
