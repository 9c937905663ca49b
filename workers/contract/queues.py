"""Where dial messages are published: the one function that names a trunk's message queue."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from workers.celery.app import dial_queue_name

DIAL_MESSAGE_SUFFIX = ".json"
PUBLISH_RETRY = {"max_retries": 5, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 2}


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


def publish_dial_body(app: Celery, trunk: str, body: bytes) -> None:
    """Publish bytes as they are (content type application/json) to the trunk's message
    queue, declaring the queue first so a broker that drops unroutable messages keeps it."""
    queue = dial_message_queue(trunk)
    producer: Any
    with app.producer_or_acquire() as producer:
        producer.publish(
            body, exchange="", routing_key=queue.name, content_type="application/json",
            content_encoding="utf-8", declare=[queue], retry=True, retry_policy=PUBLISH_RETRY,
        )
