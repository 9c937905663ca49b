"""One worker process's runtime: signaling service, leg book, recorder, limits, heartbeat, recovery.

The dial path (limits, claim, hand-over: `handle_dial_batch`) is the DialPath mixin of
workers/runtime/dialing.py, maintenance and trunk services (REGISTER, STIR/SHAKEN) mixins of
their own. JSON dial messages reach the dial path through the claim coalescer
(workers/runtime/claims.py), which stores their legs first; leg-id task messages come straight in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from models.db import make_engine
from models.repository import Repository
from sipstack.cdr import Disposition
from sipstack.config import CoreConfig
from sipstack.dialog import DialogSnapshot
from sipstack.errors import LocalProtocolError
from sipstack.events import LegEvent
from sipstack.locate import RRType
from sipstack.transport import Transport
from sipstack.uri import format_hostport
from workers.config.settings import Settings, TrunkConfig
from workers.contract.intake import DeadLetterSink, RedisDeadLetters
from workers.contract.queues import publish_dial_body
from workers.coordination.limits import TrunkLimits
from workers.coordination.recovery import (
    BrokerResetWatch,
    Heartbeat,
    OwnerWatch,
    new_instance_id,
    owner_id,
)
from workers.dns_locate import DnsLocator
from workers.events.stream import (
    REDIS_UNAVAILABLE,
    EventPublisher,
    PostgresOutbox,
    StreamWriter,
)
from workers.observability.attach import WorkerObservability, leg_fields
from workers.observability.log_format import call_fields
from workers.routing.failover import Failover
from workers.routing.groups import TrunkGroup
from workers.runtime.admission import TrunkGate
from workers.runtime.book import LegBook, LegContext, PendingEvent
from workers.runtime.dialing import DialPath
from workers.runtime.feeder import DialFeeder
from workers.runtime.maintenance import WorkerMaintenance
from workers.runtime.observed import ObservedWorker
from workers.runtime.recorder import LegRecorder
from workers.runtime.trunk_services import TrunkServices
from workers.signaling.identity import load_call_signer
from workers.signaling.manager import ManagerHooks, SignalingService
from workers.signaling.targets import TargetFailover

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """Everything one pinned worker process needs to know."""

    settings: Settings
    trunk: TrunkConfig
    node: str  # the Celery node name (its control queue is `outbound.control.<node>`)
    bind_host: str = "127.0.0.1"
    sip_port: int = 0
    user_agent: str = "outbound/0.1"
    maintenance_interval: float | None = None  # default: a third of the heartbeat TTL
    # metrics and call log lines (default: log lines only)
    observability: WorkerObservability | None = None
    # trunk groups of the trunks file (failover to another trunk's queue, docs/routing.md)
    groups: Mapping[str, TrunkGroup] = field(default_factory=dict)
    health: Callable[[str], bool] | None = None  # trunk -> up; None: every trunk counts as up


class WorkerRuntime(WorkerMaintenance, TrunkServices, DialPath):
    """One worker's signaling service, leg book, recorder, limits, heartbeat and recovery.

    Plain Python: the Celery bootstep starts and stops it, the tasks call `handle_dial` and
    `handle_control`; tests can drive it without Celery.
    """

    options: WorkerOptions

    def __init__(
        self, options: WorkerOptions, *, app: Celery | None = None, dial_threads: int = 8
    ) -> None:
        self.options = options
        self.dial_threads = dial_threads
        self.settings = options.settings
        self.trunk = options.trunk
        self.app = app
        self.instance = new_instance_id()
        self.owner = owner_id(options.node, self.instance)
        self.accepting = False
        self.observability = options.observability or WorkerObservability(options.trunk.name)
        self.stats: dict[str, int] = {"accepted": 0, "duplicates": 0, "retries": 0,
                                      "failed": 0, "recovered": 0, "requeued": 0,
                                      "expired": 0, "cancelled": 0, "rejected": 0}
        self._stop_maintenance = threading.Event()
        self._next_purge = 0.0
        self._maintenance: threading.Thread | None = None
        self._started = False
        self.registration = None
        # The trunk's STIR/SHAKEN signer, read once; a bad key file is a ConfigError here.
        self.call_signer = load_call_signer(options.trunk)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> WorkerRuntime:
        settings = self.settings
        # One pooled connection per dial thread plus the recorder's and maintenance's: a pool
        # smaller than that opens and closes a connection for every dial (overflow churn).
        # No pre-ping (a round trip per transaction): a connection a restarted server dropped
        # fails its statement, is invalidated, and the repository's retry takes a fresh one.
        self.repository = Repository(make_engine(
            settings.database_url, pool_size=self.dial_threads + 4, max_overflow=4,
            pool_pre_ping=False,
        ))
        self.redis: redis.Redis[Any] = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2,
            health_check_interval=10,
        )
        self.broker_redis: redis.Redis[Any] | None = None
        if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
            self.broker_redis = redis.Redis.from_url(
                settings.broker_url, socket_timeout=2, socket_connect_timeout=2
            )
        self.limits = TrunkLimits(self.redis, settings)
        self.heartbeat = Heartbeat(
            self.redis, settings, node=self.options.node, instance=self.instance,
            trunk=self.trunk.name, on_beat=self._renew_leases,
        )
        self.heartbeat.take_over()
        self.gate = TrunkGate(self.redis, settings, self.trunk, bind_host=self.options.bind_host)
        self.failover = Failover(self.trunk, self.options.groups, self._publish_dial_body,
                                 health=self.options.health or self.gate.trunk_is_up)
        self.book = LegBook(self.owner, trunk=self.trunk.name, end_router=self.failover.end)
        self.outbox = PostgresOutbox(
            self.repository, trunk=self.trunk.name, workers=[self.owner], defer_marks=True
        )
        self.stream_writer = StreamWriter(self.redis, settings)
        self.publisher = EventPublisher(self.stream_writer, self.outbox)
        self.dead_letters: DeadLetterSink = RedisDeadLetters(self.redis, settings,
                                                             self.trunk.name)
        self.recorder = LegRecorder(
            self.repository, self.publisher, worker=self.owner, outbox=self.outbox,
            on_finished=self._finished,
        ).start()
        self.targets = self._target_failover()
        hooks = ManagerHooks(
            on_event=self.targets.on_event if self.targets else self._on_event,
            on_dialog_call_id_adopted=self.book.call_id_adopted,
            on_leg_removed=self.targets.on_leg_removed if self.targets else self._on_leg_removed,
        )
        core_config = CoreConfig(
            local_addresses={Transport.UDP: (self.options.bind_host, self.options.sip_port)},
            from_user=self.trunk.caller_user or "outbound",
            from_display_name=self.trunk.caller_display_name,
            user_agent=self.options.user_agent,
            udp_only=self.trunk.udp_only,  # the core keeps big requests on UDP (RFC 3261 §18.1.1)
            **self.trunk.prack_options(),
        )
        # With the trunk's certificate there is a TLS listener: sips: Contacts point at it.
        transport_config = self.trunk.transport_config(self.options.bind_host,
                                                       self.options.sip_port)
        self.signaling = SignalingService(core_config, transport_config, hooks,
                                          thread_name=f"sip-{self.trunk.name}")
        self.signaling.start()
        self._start_gate()
        self._start_registration()
        self.feeder = DialFeeder(
            self.signaling, self._fail_before_invite,
            dial=self.targets.dial if self.targets else None,
            prepare=self._sign_invite if self.call_signer is not None else None,
        )
        self.book.set_snapshot_source(self._snapshot)
        self.observability.attach(ObservedWorker(
            self.signaling, self.recorder, self.publisher, self.repository.engine,
            self.trunk.name, self.owner,
        ))
        self.heartbeat.start()
        self.owner_watch = OwnerWatch(self.redis, settings)
        self.broker_watch = (
            BrokerResetWatch(self.broker_redis, settings, self.trunk.name)
            if self.broker_redis is not None else None
        )
        self._started = True
        self.accepting = True
        self.maintain()  # a dead predecessor's legs are ended before the first dial
        interval = self.options.maintenance_interval or settings.heartbeat_ttl / 3
        self._maintenance = threading.Thread(
            target=self._maintain_forever, args=(interval,), name="maintenance", daemon=True
        )
        self._maintenance.start()
        log.info("worker %s serving trunk %s, SIP on %s", self.owner, self.trunk.name,
                 self._listening())
        return self

    def _target_failover(self) -> TargetFailover | None:
        """RFC 3263 location and failover between targets, for a trunk with `locate`."""
        if not self.trunk.locate:
            return None
        locator = DnsLocator(self.settings.dns_nameserver or None,
                             timeout=self.settings.dns_timeout,
                             families=(RRType.A,))  # the UDP socket is IPv4
        scheme = "sips" if self.trunk.transport is Transport.TLS else "sip"
        return TargetFailover(
            lambda: self.signaling.manager, locator, proxy=self.trunk.proxy, scheme=scheme,
            failover_timeout=self.trunk.failover_timeout, on_event=self._on_event,
            on_leg_removed=self._on_leg_removed,
        )
    def _start_gate(self) -> None:
        """Trunk health pings on the signaling loop, and the trunk's gauges."""
        metrics = self.observability.metrics
        if metrics is not None:
            self.gate.register_gauges(metrics.registry)
        self.gate.start(self.signaling)

    def trunk_is_up(self, name: str) -> bool:
        """Whether the shared OPTIONS health board lets `name` take dials (True without
        evidence): the `health` of workers.routing.groups.next_trunk."""
        return self.gate.trunk_is_up(name)

    def _listening(self) -> str:
        transports = self.signaling.manager.transports
        return ", ".join(
            f"{kind.value} {format_hostport(*transports.local_address(kind))}"
            for kind in Transport if kind is Transport.UDP or transports.is_listening(kind)
        )

    @property
    def sip_address(self) -> tuple[str, int]:
        return self.signaling.manager.local_address

    def stop(self, drain_timeout: float | None = None) -> bool:
        """Graceful stop: no new dials, CANCEL unanswered legs, let answered ones run up to
        the drain timeout, BYE what is left, store every event and CDR. True when nothing
        was lost."""
        if not self._started:
            return True
        self._started = False
        self.accepting = False
        self._stop_maintenance.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=30)
        timeout = self.settings.drain_timeout if drain_timeout is None else drain_timeout
        self._drain(timeout)
        self.gate.stop(self.signaling)
        self._stop_registration()
        self.signaling.stop(timeout=10.0)
        self.feeder.close()
        stored = self.recorder.stop(timeout=60.0)
        self.heartbeat.stop(remove=stored)
        self._release_quietly([c.leg_id for c in self.book.live()])
        self.redis.close()
        if self.broker_redis is not None:
            self.broker_redis.close()
        self.repository.engine.dispose()
        return stored

    def _drain(self, timeout: float) -> None:
        def cancel_unanswered() -> int:
            manager = self.signaling.manager
            for call_id in manager.live_legs():
                if not manager.is_leg_established(call_id):
                    try:
                        manager.send_cancel(call_id)
                    except LocalProtocolError as error:
                        context = self.book.find(call_id=call_id)
                        log.debug("drain: not cancelled: %s", error, extra=leg_fields(context)
                                  if context is not None else call_fields(call_id=call_id))
            return len(manager.live_legs())

        try:
            live = self.signaling.call(cancel_unanswered).result(timeout=10)
        except Exception as error:
            log.error("drain: could not cancel unanswered legs: %s", error)
            return
        log.info("draining %d leg(s) for up to %.0f s", live, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                live = self.signaling.call(
                    lambda: len(self.signaling.manager.live_legs())
                ).result(timeout=5)
            except Exception:
                break
            if live == 0:
                return
            time.sleep(0.1)
        log.info("drain timeout: %d leg(s) still up get a BYE", live)

    # --- signaling loop hooks ------------------------------------------------------------------

    def _record(self, pending: PendingEvent | None) -> None:
        """Hand an event to the recorder (any thread; never blocks)."""
        if pending is None:
            return
        self.recorder.submit(pending)
        try:  # metrics and log lines never cost an event its storage
            self.observability.recorded(pending)
        except Exception:
            log.exception("observing event %s failed", pending.event.event_id)

    def _on_event(self, event: LegEvent) -> None:
        self._record(self.book.pending_for(event))
        self.gate.leg_ended(event)

    def _snapshot(self, call_id: str) -> DialogSnapshot | None:
        try:
            return self.signaling.manager.dialog_snapshot(call_id)
        except LocalProtocolError:
            return None

    def _on_leg_removed(self, call_id: str) -> None:
        context = self.book.find(call_id=call_id)
        if context is not None and not context.finished:
            # dropped without a terminal event (shutdown timeout): it still gets one, and a CDR
            self._record(self.book.synthetic_end(
                context, at=time.time(), state="ended" if context.established else "failed",
                reason="dropped by the worker at shutdown (no answer to BYE/CANCEL)",
                disposition=Disposition.ANSWERED if context.established else Disposition.FAILED,
            ))

    def _finished(self, contexts: list[LegContext]) -> None:
        self.failover.hand_over(contexts)
        for context in contexts:
            self.book.forget(context)
        with contextlib.suppress(*REDIS_UNAVAILABLE):  # else the leases lapse by themselves
            self.limits.release_leases(self.trunk.name, [c.leg_id for c in contexts])

    def _renew_leases(self) -> None:
        live = [context.leg_id for context in self.book.live()]
        if live:
            self.limits.renew_leases(self.trunk.name, live)

    # --- hand-over to another trunk (failover) ------------------------------------------------

    def _publish_dial_body(self, trunk: str, body: bytes) -> None:
        """A dial message for another trunk's queue (a failed-over call's next attempt)."""
        if self.app is None:
            raise RuntimeError("no Celery app to hand the call over with")
        publish_dial_body(self.app, trunk, body)
