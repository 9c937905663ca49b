"""Where dial messages are published: the one function that names a trunk's message queue."""

from __future__ import annotations

from kombu.entity import Queue

from workers.celery.app import dial_queue_name

DIAL_MESSAGE_SUFFIX = ".json"


def dial_message_queue_name(trunk: str) -> str:
    """`dial.<trunk>.json`: plain JSON dial messages (docs/dial-message.md). Celery task
    messages keep `dial.<trunk>` (workers.celery.app.dial_queue_name)."""
    return dial_queue_name(trunk) + DIAL_MESSAGE_SUFFIX


def dial_message_queue(trunk: str) -> Queue:
    """The kombu queue (default exchange, routing key = the queue name) the worker consumes
    and the Python client publishes to."""
    name = dial_message_queue_name(trunk)
    queue: Queue = Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
    return queue
