"""The Celery application: broker settings, task names and the router (dial for T -> `dial.T`)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.utils import worker_direct
from kombu.entity import Queue
from kombu.transport import redis as kombu_redis

from workers.config.settings import Settings

DIAL_TASK = "outbound.dial"
DIAL_BATCH_TASK = "outbound.dial_batch"  # several legs of one trunk in one message
DIAL_TASKS = frozenset({DIAL_TASK, DIAL_BATCH_TASK})
CONTROL_TASK = "outbound.control"
DIAL_QUEUE_PREFIX = "dial."


def dial_queue_name(trunk: str) -> str:
    return f"{DIAL_QUEUE_PREFIX}{trunk}"


def dial_queue(trunk: str) -> Queue:
    name = dial_queue_name(trunk)
    queue: Queue = Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
    return queue


def control_queue(worker: str) -> Queue:
    """The direct queue of one worker node (`celery.utils.worker_direct`)."""
    queue: Queue = worker_direct(worker)
    return queue


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
        pool = self.pool
        client = self.__dict__.get("_shared_client")
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
        return {"queue": control_queue(worker)}
    return None


def configure(app: Celery, settings: Settings, **extra: Any) -> Celery:
    """Apply settings to an app (before it connects)."""
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.redis_url,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Fail fast on a dead socket so the consumer reconnects after a Redis restart.
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            "health_check_interval": 10,
        },
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
    app.conf.update(extra)
    return app


def create_app(settings: Settings | None = None, *, name: str = "outbound") -> Celery:
    """A configured app; tasks are registered on the module-level `app` (workers.celery.tasks)."""
    return configure(Celery(name, set_as_current=False), settings or Settings.from_env())


app = Celery("outbound", include=["workers.celery.tasks"])
configure(app, Settings.from_env())
