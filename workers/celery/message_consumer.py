"""The consumer bootstep that takes plain JSON dial messages off `dial.<trunk>.json`.

Any scheduler can publish there without Celery or Python (docs/dial-message.md). Each message
is handed to `WorkerRuntime.handle_dial_message` and acknowledged once it was stored and
claimed, refused (rejected event + dead letter) or found to be a repeat; a worker that cannot
take it now (stopping, PostgreSQL away) puts it back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from kombu.message import Message
from kombu.messaging import Consumer

from workers.celery.current import current_runtime
from workers.contract.queues import dial_message_queue

log = logging.getLogger(__name__)

_trunk: str | None = None


def set_trunk(trunk: str) -> None:
    global _trunk
    _trunk = trunk


class DialMessageStep(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Consumes the trunk's JSON dial queue next to Celery's task queues."""

    label = "outbound dial messages"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.app = parent.app
        self.concurrency = getattr(parent.controller, "concurrency", 0) or 8
        super().__init__(parent, **kwargs)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        if _trunk is None:
            return []
        # as many unacknowledged messages as Celery lets the task consumer hold
        prefetch = int(self.app.conf.worker_prefetch_multiplier) * int(self.concurrency)
        consumer = Consumer(  # type: ignore[no-untyped-call]
            channel, queues=[dial_message_queue(_trunk)], callbacks=[self.on_message],
            accept=None, no_ack=False, prefetch_count=max(prefetch, 1),
        )
        consumer.on_decode_error = self.on_decode_error
        return [consumer]

    @staticmethod
    def on_message(body: Any, message: Message) -> None:
        handle_delivery(message.body, message)

    @staticmethod
    def on_decode_error(message: Message, error: Exception) -> None:
        # kombu could not decode the body (not JSON, a wrong content type): the runtime
        # refuses it like any other bad message, from the raw bytes.
        handle_delivery(message.body, message)


def handle_delivery(body: Any, message: Message) -> None:
    raw = body if isinstance(body, bytes) else str(body).encode()
    runtime = current_runtime()
    if runtime is None:
        message.requeue()  # type: ignore[no-untyped-call]
        return
    try:
        outcome = runtime.handle_dial_messages(raw, enqueued_at=time.time())
        if outcome.retry and not outcome.requeue:
            # the legs are stored: they wait as a leg-id task message, published before the ack
            runtime.retry_dials_later(outcome.retry, outcome.retry_after)
    except Exception:
        log.exception("dial message not handled; it goes back to the queue")
        message.requeue()  # type: ignore[no-untyped-call]
        return
    if outcome.requeue:
        message.requeue()  # type: ignore[no-untyped-call]
    else:
        message.ack()  # type: ignore[no-untyped-call]
