"""The Celery app's routing and settings, and its Redis broker transport (real Redis)."""

from __future__ import annotations

import uuid

import pytest

from workers.celery.app import (
    CONTROL_TASK,
    DIAL_TASK,
    SharedClientChannel,
    create_app,
    dial_queue_name,
    route_task,
)
from workers.config.settings import Settings


def test_dials_go_to_their_trunk_queue() -> None:
    route = route_task(DIAL_TASK, (), {"trunk": "carrier-a", "leg_id": "x"}, {})
    assert route == {"queue": "dial.carrier-a", "routing_key": "dial.carrier-a"}
    assert dial_queue_name("b") == "dial.b"
    with pytest.raises(ValueError, match="needs its trunk"):
        route_task(DIAL_TASK, (), {"leg_id": "x"}, {})


def test_control_goes_to_the_owner_workers_direct_queue() -> None:
    route = route_task(CONTROL_TASK, (), {"worker": "outbound.a@host1"}, {})
    assert route is not None
    queue = route["queue"]
    assert queue.name == "outbound.a@host1.dq2" and queue.routing_key == "outbound.a@host1"
    with pytest.raises(ValueError, match="owner worker"):
        route_task(CONTROL_TASK, (), {}, {})
    assert route_task("other.task", (), {}, {}) is None


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
