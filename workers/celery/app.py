"""The Celery application: broker settings, task names and the router (dial for T -> `dial.T`).

Two brokers: Redis (kombu lists, the default) and RabbitMQ (`amqp://`, the one Celery
recommends for production). On RabbitMQ every queue we own is a durable quorum queue:
`dial.<trunk>` on the topic exchange `outbound.dial`, dead-lettering rejected messages through
the exchange `outbound.dead` into `dial.<trunk>.dead`, and one control queue per worker node
(`outbound.control.<node>`) that outlives the worker's restarts, unlike Celery's auto-delete
`worker_direct` queues. Publishes wait for the broker's confirm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.app import amqp as amqp_module
from celery.app import events as events_module
from celery.events.dispatcher import EventDispatcher
from celery.worker.request import Request
from celery.worker.request import logger as request_logger
from kombu.entity import Exchange, Queue
from kombu.transport import redis as kombu_redis

from workers.config.settings import Settings

DIAL_TASK = "outbound.dial"
DIAL_BATCH_TASK = "outbound.dial_batch"  # several legs of one trunk in one message
DIAL_TASKS = frozenset({DIAL_TASK, DIAL_BATCH_TASK})
CONTROL_TASK = "outbound.control"
DIAL_QUEUE_PREFIX = "dial."
CONTROL_QUEUE_PREFIX = "outbound.control."
DEAD_SUFFIX = ".dead"
# RabbitMQ only. Topic exchanges: Celery's native delayed delivery (a retried dial's countdown
# on quorum queues) binds a queue with `#.<routing key>`, which a direct exchange cannot route.
DIAL_EXCHANGE = "outbound.dial"
DEAD_EXCHANGE = "outbound.dead"
CONTROL_EXCHANGE = "outbound.control"
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def is_amqp(broker_url: str) -> bool:
    """True for a RabbitMQ (AMQP 0-9-1) broker URL."""
    return broker_url.startswith(AMQP_SCHEMES)


def dial_queue_name(trunk: str) -> str:
    return f"{DIAL_QUEUE_PREFIX}{trunk}"


def dead_queue_name(trunk: str) -> str:
    return f"{dial_queue_name(trunk)}{DEAD_SUFFIX}"


def control_queue_name(worker: str) -> str:
    return f"{CONTROL_QUEUE_PREFIX}{worker}"


def _quorum(name: str, exchange: str, **arguments: Any) -> Queue:
    queue: Queue = Queue(  # type: ignore[no-untyped-call]
        name, Exchange(exchange, type="topic", durable=True),  # type: ignore[no-untyped-call]
        routing_key=name, durable=True, auto_delete=False,
        queue_arguments={"x-queue-type": "quorum", **arguments},
    )
    return queue


def broker_queue(name: str, *, amqp: bool) -> Queue | None:
    """Our definition of the queue `name` on RabbitMQ (None: Celery's default, a plain
    queue on the exchange of its name, which is what every queue is on Redis)."""
    if not amqp:
        return None
    if name.startswith(DIAL_QUEUE_PREFIX) and name.endswith(DEAD_SUFFIX):
        return _quorum(name, DEAD_EXCHANGE)
    if name.startswith(DIAL_QUEUE_PREFIX):
        return _quorum(name, DIAL_EXCHANGE, **{
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-dead-letter-routing-key": f"{name}{DEAD_SUFFIX}",
        })
    if name.startswith(CONTROL_QUEUE_PREFIX):
        return _quorum(name, CONTROL_EXCHANGE)
    return None


class OutboundQueues(amqp_module.Queues):  # type: ignore[misc]
    """Celery's queue map; a queue first named by a route, `send_task(queue=...)` or the
    worker's `-Q` list is built by `broker_queue`, so every publisher and consumer declares
    `dial.<trunk>` with the same arguments (RabbitMQ refuses a redeclaration that differs)."""

    app: Celery | None = None

    def new_missing(self, name: str) -> Queue:
        amqp = self.app is not None and is_amqp(str(self.app.conf.broker_url))
        queue = broker_queue(name, amqp=amqp)
        return queue if queue is not None else super().new_missing(name)


class OutboundAMQP(amqp_module.AMQP):  # type: ignore[misc]
    queues_cls = OutboundQueues

    def Queues(self, *args: Any, **kwargs: Any) -> OutboundQueues:  # Celery's name
        queues: OutboundQueues = super().Queues(*args, **kwargs)
        queues.app = self.app
        return queues


# --- acknowledgements from the pool's threads (RabbitMQ) -------------------------------------
# Celery's thread pool acknowledges a late-acked message in the thread that ran the task. A
# Redis ack borrows a pooled connection; an AMQP ack writes on the consumer's connection, which
# the consumer thread reads at the same time, and py-amqp is not thread-safe: under load the
# consumer stalls, misses its heartbeats and RabbitMQ drops the connection (seen in
# bench.e2e_throughput: "missed heartbeats from client", every unacked dial redelivered). On
# RabbitMQ, acks and rejects are therefore handed to the consumer thread's event loop.
_consumer_hub: Any = None
_consumer_thread: threading.Thread | None = None


def in_consumer_thread(action: Callable[[], None]) -> None:
    """Run `action` now in the consumer thread (or with no relay started), else hand it to
    the consumer's event loop (kombu's `Hub.call_soon` is thread-safe and wakes the loop)."""
    hub = _consumer_hub
    if hub is None or threading.current_thread() is _consumer_thread:
        action()
    else:
        hub.call_soon(action)


def start_ack_relay(hub: Any) -> None:
    """In the consumer thread (a worker bootstep's start): relay acks through `hub`."""
    global _consumer_hub, _consumer_thread
    _consumer_thread = threading.current_thread()
    _consumer_hub = hub


def stop_ack_relay() -> None:
    global _consumer_hub, _consumer_thread
    _consumer_hub = _consumer_thread = None


class RelayedAckRequest(Request):  # type: ignore[misc]
    """Celery's task request whose ack/reject goes through `in_consumer_thread`."""

    acknowledged: bool

    def acknowledge(self) -> None:
        if self.acknowledged:
            return
        self.acknowledged = True  # now: a second call must not ack the delivery tag twice
        on_ack, errors = self._on_ack, self._connection_errors
        in_consumer_thread(lambda: on_ack(request_logger, errors))

    def reject(self, requeue: bool = False) -> None:
        if self.acknowledged:
            return
        self.acknowledged = True
        on_reject, errors = self._on_reject, self._connection_errors
        in_consumer_thread(lambda: on_reject(request_logger, errors, requeue))
        self.send_event("task-rejected", requeue=requeue)


class RelayedFlushDispatcher(EventDispatcher):  # type: ignore[misc]
    """Celery's event dispatcher whose flush runs in the consumer thread (RabbitMQ).

    The cause of the RabbitMQ stall beyond one prefetch window: Celery buffers task events
    and a pool thread whose `task-succeeded` fills the buffer (24 events) flushes it inline,
    holding the dispatcher's lock while py-amqp waits for the publisher confirm
    (`confirm_publish`) on the event connection the consumer thread also publishes on. Seen
    with py-spy in a stalled worker: that pool thread in `basic_publish_confirm` for good, the
    consumer thread in `EventDispatcher.flush` waiting for the lock, so its event loop sent no
    ack and no heartbeat until RabbitMQ dropped the connection. Pool threads now only append
    to the buffer; the consumer thread publishes it."""

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        in_consumer_thread(lambda: EventDispatcher.flush(self, errors=errors, groups=groups))


class OutboundEvents(events_module.Events):  # type: ignore[misc]
    dispatcher_cls = f"{__name__}:RelayedFlushDispatcher"


class OutboundTask(Task):  # type: ignore[misc]
    Request = f"{__name__}:RelayedAckRequest"


class OutboundCelery(Celery):  # type: ignore[misc]
    """The Celery app class, with one fix for RabbitMQ's quorum queues.

    There Celery sends a message with a countdown through its native delayed delivery, whose
    routing key holds whole seconds: a countdown under one second (a dial the trunk's CPS
    refuses comes back after a fraction of a second) fails with "countdown must be a
    positive number", and the retry rejects the message, dead-lettering an accepted dial.
    Such countdowns become one second (the delayed delivery's resolution).
    """

    def send_task(self, *args: Any, countdown: float | None = None, **options: Any) -> Any:
        if countdown is not None and 0 < countdown < 1 and is_amqp(str(self.conf.broker_url)):
            countdown = 1
        return super().send_task(*args, countdown=countdown, **options)


def dial_queue(trunk: str, *, amqp: bool = False) -> Queue:
    """The trunk's dial queue; on RabbitMQ a quorum queue that dead-letters what a worker
    rejects (without requeue) into `dead_queue(trunk)`."""
    name = dial_queue_name(trunk)
    queue = broker_queue(name, amqp=amqp)
    if queue is None:
        queue = Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
    return queue


def dead_queue(trunk: str) -> Queue:
    """RabbitMQ: where the trunk's rejected dial messages are kept (nothing consumes it)."""
    return _quorum(dead_queue_name(trunk), DEAD_EXCHANGE)


def control_queue(worker: str, *, amqp: bool = False) -> Queue:
    """The durable control queue of one worker node: a message sent while the worker
    restarts waits there (Celery's `worker_direct` queues are auto-delete on RabbitMQ)."""
    name = control_queue_name(worker)
    queue = broker_queue(name, amqp=amqp)
    if queue is None:
        queue = Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
    return queue


def worker_queues(trunk: str, node: str) -> list[str]:
    """The queues a pinned worker consumes: its trunk's dial queue and its own control queue."""
    return [dial_queue_name(trunk), control_queue_name(node)]


def declare_dead_letters(app: Celery, trunk: str) -> None:
    """RabbitMQ: declare the trunk's dead-letter exchange and queue (no-op on Redis)."""
    if not is_amqp(str(app.conf.broker_url)):
        return
    with app.connection_for_write() as connection:
        dead_queue(trunk).bind(connection.default_channel).declare()  # type: ignore[no-untyped-call]


class SharedClientChannel(kombu_redis.Channel):
    """kombu's Redis channel, keeping one client object per connection pool.

    Why a private method is overridden: kombu (5.4-5.7) offers no public way to reuse the
    client. `broker_transport_options` reach the connection pool's parameters (and
    `connection_class`), never the `redis.Redis` object built around the pool; `Channel.Client`
    is set in `__init__` from the private `_get_client`; `conn_or_acquire` and the unacked
    bookkeeping call `_create_client` directly. So `_create_client` is the one seam;
    tests/unit/test_kombu_contract.py fails when kombu changes its signature or what it builds.

    kombu builds a new `redis.Redis` for every delivered and every acknowledged message
    (bookkeeping of unacked messages); each build copies redis-py's table of response
    callbacks, about a tenth of a millisecond of CPU per message. The client object holds no
    connection of its own (each command borrows one from the pool), so sharing it is safe.
    """

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self.__dict__.get("_shared_client")
        if client is not None and self._pool is None and getattr(
            self.connection, "client", None) is None:
            # Closing after the broker connection was lost (Redis restarting): kombu restores
            # unacknowledged messages with a client, but building a pool now fails with an
            # AttributeError (no connection parameters left) that kills the worker. The old
            # client fails with a connection error instead, which the consumer ignores; the
            # messages come back after the visibility timeout.
            return client
        pool = self.pool
        if client is None or client.connection_pool is not pool:
            client = super()._create_client(asynchronous=False)  # type: ignore[no-untyped-call]
            self.__dict__["_shared_client"] = client
        return client


class SharedClientRedisTransport(kombu_redis.Transport):
    """The Redis broker transport with `SharedClientChannel`."""

    Channel = SharedClientChannel


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any
) -> dict[str, Any] | None:
    """Send each dial to its trunk's queue; control messages must name their worker."""
    if name in DIAL_TASKS:
        trunk = (kwargs or {}).get("trunk")
        if not trunk:
            raise ValueError("a dial task needs its trunk (keyword argument 'trunk')")
        queue = dial_queue_name(trunk)
        return {"queue": queue, "routing_key": queue}
    if name == CONTROL_TASK and not options.get("queue"):
        worker = (kwargs or {}).get("worker")
        if not worker:
            raise ValueError("a control task needs the owner worker (keyword argument 'worker')")
        queue = control_queue_name(worker)
        return {"queue": queue, "routing_key": queue}
    return None


def configure(app: Celery, settings: Settings, **extra: Any) -> Celery:
    """Apply settings to an app (before it connects)."""
    amqp = is_amqp(settings.broker_url)
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.redis_url,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=_transport_options(settings, amqp=amqp),
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_routes=(route_task,),
        task_create_missing_queues=True,
        task_default_queue="outbound.default",
        result_expires=3600,
        worker_direct=True,
        worker_prefetch_multiplier=16,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # Remote control and events are what Flower and `celery inspect` see of the workers:
        # one pub/sub channel per worker, three events per task message (task-received,
        # -started, -succeeded) and one per send (task-sent). `outbound worker
        # --no-task-events` turns the worker's off.
        worker_enable_remote_control=True,
        # trunk limits are shared in Redis (coordination.limits); Celery's per-worker buckets unused
        worker_disable_rate_limits=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        enable_utc=True,
        timezone="UTC",
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport = f"{__name__}:SharedClientRedisTransport"
    if amqp:
        # Quorum queues have no global QoS: Celery (>= 5.5) sees the quorum queues among the
        # worker's queues and uses a per-consumer prefetch instead.
        app.conf.worker_detect_quorum_queues = True
    app.conf.update(extra)
    return app


def _transport_options(settings: Settings, *, amqp: bool) -> dict[str, Any]:
    if amqp:
        # Publisher confirms: `send_task` returns once RabbitMQ has the message (on quorum
        # queues: once a majority of the nodes wrote it), so an accepted dial is on disk.
        return {"confirm_publish": True}
    return {
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for messages a dead worker left unacknowledged every 10 s (kombu's default
        # throttle makes it every 100 s), so they come back soon after the visibility timeout.
        "unacked_restore_throttle": 1,
        # Fail fast on a dead socket so the consumer reconnects after a Redis restart.
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    }


def create_app(settings: Settings | None = None, *, name: str = "outbound") -> Celery:
    """A configured app; tasks are registered on the module-level `app` (workers.celery.tasks)."""
    new = OutboundCelery(name, set_as_current=False, amqp=OutboundAMQP, task_cls=OutboundTask,
                         events=OutboundEvents)
    return configure(new, settings or Settings.from_env())


app = OutboundCelery("outbound", include=["workers.celery.tasks"], amqp=OutboundAMQP,
                     task_cls=OutboundTask, events=OutboundEvents)
configure(app, Settings.from_env())
