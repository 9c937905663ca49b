"""The Celery worker bootstep that starts the worker runtime (signaling loop thread, socket,
recorder, heartbeat) before the worker consumes, and drains and stops it after."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps

from workers.celery import message_consumer
from workers.celery.app import declare_dead_letters, is_amqp, start_ack_relay, stop_ack_relay
from workers.celery.current import set_current_runtime
from workers.runtime.worker import WorkerOptions, WorkerRuntime

log = logging.getLogger(__name__)

_options: WorkerOptions | None = None


def install(app: Celery, options: WorkerOptions) -> None:
    """Have `app`'s workers run a runtime built from `options`."""
    global _options
    _options = options
    if SignalingStep not in app.steps["worker"]:
        app.steps["worker"].add(SignalingStep)
    message_consumer.set_trunk(options.trunk.name)
    if message_consumer.DialMessageStep not in app.steps["consumer"]:
        app.steps["consumer"].add(message_consumer.DialMessageStep)


class SignalingStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Part of the worker blueprint: after the pool exists, before the consumer (which
    Celery starts last and stops first)."""

    requires = ("celery.worker.components:Pool",)
    label = "outbound signaling"

    def create(self, parent: Any) -> None:
        return None

    def start(self, parent: Any) -> None:
        if _options is None:
            raise RuntimeError("workers.celery.bootstep.install() was not called before the worker")
        threads = int(getattr(parent, "concurrency", 0) or 8)
        # RabbitMQ: the dead-letter queue exists before the first message can be rejected.
        declare_dead_letters(parent.app, _options.trunk.name)
        hub = getattr(parent, "hub", None)
        if hub is not None and is_amqp(str(parent.app.conf.broker_url)):
            start_ack_relay(hub)  # AMQP acks leave from the consumer thread (app.py)
        set_current_runtime(WorkerRuntime(_options, app=parent.app, dial_threads=threads).start())

    def stop(self, parent: Any) -> None:
        self._stop(drain=True)

    def terminate(self, parent: Any) -> None:
        self._stop(drain=False)

    def shutdown(self, parent: Any) -> None:
        self._stop(drain=True)

    @staticmethod
    def _stop(*, drain: bool) -> None:
        runtime = set_current_runtime(None)
        stop_ack_relay()
        if runtime is None:
            return
        stored = runtime.stop(drain_timeout=None if drain else 0.0)
        if not stored:
            log.critical("worker stopped with events or CDRs not stored")
