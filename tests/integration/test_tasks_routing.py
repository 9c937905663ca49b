"""The Celery app's routing and settings, and its Redis broker transport (real Redis)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from workers.celery.app import (
    CONTROL_TASK,
    DIAL_TASK,
    SharedClientChannel,
    control_queue_name,
    create_app,
    dead_queue,
    dial_queue_name,
    route_task,
    worker_queues,
)
from workers.config.settings import Settings


def test_dials_go_to_their_trunk_queue() -> None:
    route = route_task(DIAL_TASK, (), {"trunk": "carrier-a", "leg_id": "x"}, {})
    assert route == {"queue": "dial.carrier-a", "routing_key": "dial.carrier-a"}
    assert dial_queue_name("b") == "dial.b"
    with pytest.raises(ValueError, match="needs its trunk"):
        route_task(DIAL_TASK, (), {"leg_id": "x"}, {})


def test_control_goes_to_the_owner_workers_durable_control_queue() -> None:
    route = route_task(CONTROL_TASK, (), {"worker": "outbound.a@host1"}, {})
    assert route == {"queue": "outbound.control.outbound.a@host1",
                     "routing_key": "outbound.control.outbound.a@host1"}
    with pytest.raises(ValueError, match="owner worker"):
        route_task(CONTROL_TASK, (), {}, {})
    assert route_task("other.task", (), {}, {}) is None


def _arguments(queue: Any) -> object:
    return queue.queue_arguments  # kombu's Queue sets it in __init__; its types omit it


def test_rabbitmq_queues_are_durable_quorum_queues_with_a_dead_letter_exchange() -> None:
    app = create_app(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/x"))
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.worker_detect_quorum_queues is True
    dial = app.amqp.queues[dial_queue_name("a")]  # built on first use, like a route's name
    assert dial.durable and not dial.auto_delete and dial.exchange.name == "outbound.dial"
    assert dial.queue_arguments == {
        "x-queue-type": "quorum", "x-dead-letter-exchange": "outbound.dead",
        "x-dead-letter-routing-key": "dial.a.dead",
    }
    assert _arguments(dead_queue("a")) == {"x-queue-type": "quorum"}
    control = app.amqp.queues[control_queue_name("w@h")]
    assert control.queue_arguments == {"x-queue-type": "quorum"} and not control.auto_delete
    assert worker_queues("a", "w@h") == ["dial.a", "outbound.control.w@h"]
    # on Redis every queue stays Celery's plain one
    redis_app = create_app(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert redis_app.amqp.queues[dial_queue_name("a")].queue_arguments is None


def test_app_acks_late_and_uses_the_configured_broker() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/5", broker_url="redis://b:6379/2",
                        visibility_timeout=42)
    app = create_app(settings)
    assert app.conf.broker_url == "redis://b:6379/2"
    assert app.conf.result_backend == "redis://127.0.0.1:6379/5"
    assert app.conf.task_acks_late is True
    assert app.conf.worker_direct is True
    assert app.conf.broker_transport_options["visibility_timeout"] == 42


def test_redis_broker_keeps_one_client_per_pool_and_still_delivers() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", redis_url="redis://127.0.0.1:6379/0")
    app = create_app(settings)
    assert app.conf.broker_transport.endswith(":SharedClientRedisTransport")
    queue_name = f"outbound-test-{uuid.uuid4().hex[:10]}"
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, SharedClientChannel)
        assert channel._create_client() is channel._create_client()
        with connection.SimpleQueue(queue_name) as queue:
            queue.put({"leg": 1})
            message = queue.get(timeout=5)
            assert message.payload == {"leg": 1}
            message.ack()  # the unacked bookkeeping goes through the shared client
            unacked = channel._create_client().hlen(channel.unacked_key)
            assert unacked == 0
            queue.queue.delete()


def test_other_brokers_keep_their_own_transport() -> None:
    app = create_app(Settings(broker_url="memory://", redis_url="redis://127.0.0.1:6379/0"))
    assert not app.conf.broker_transport
