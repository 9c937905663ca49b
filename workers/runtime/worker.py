"""One worker process's runtime: signaling service, leg book, recorder, limits, heartbeat, recovery.

Over 500 lines for now: it holds both dial paths (leg-id task messages and JSON dial messages,
with their refusal, expiry and dead letters) beside the lifecycle; the JSON path is meant to
move into the claim coalescer (workers/runtime/claims.py, issue 11), which shrinks it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from sqlalchemy.orm import Session

from models import operations
from models.db import make_engine
from models.dial_fields import InvalidDialRequest, validate_dial_fields
from models.enums import TERMINAL_STATES
from models.legs import Leg
from models.operations import ClaimedLeg
from models.repository import Repository
from models.times import utc_now
from models.transient import is_transient
from sipstack.cdr import Disposition, HangupReason
from sipstack.config import CoreConfig
from sipstack.dial import DialRequest
from sipstack.dialog import DialogSnapshot
from sipstack.errors import LocalProtocolError
from sipstack.events import LegEvent
from sipstack.locate import RRType
from sipstack.outcome import LocalCause
from sipstack.transport import Transport
from sipstack.uri import format_hostport
from workers.celery.app import DIAL_BATCH_TASK, dial_queue_name
from workers.config.settings import Settings, TrunkConfig
from workers.contract.dial_message import DialMessage, message_leg_id, parse_dial_message
from workers.contract.intake import DeadLetterSink, RedisDeadLetters, describe, rejected_event
from workers.contract.queues import publish_dial_body
from workers.coordination.cancel_notes import CancelNote, read_notes
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
from workers.runtime.feeder import DialFeeder
from workers.runtime.maintenance import WorkerMaintenance
from workers.runtime.observed import ObservedWorker
from workers.runtime.recorder import LegRecorder
from workers.runtime.trunk_services import TrunkServices
from workers.signaling.identity import load_call_signer
from workers.signaling.manager import ManagerHooks, SignalingService
from workers.signaling.targets import TargetFailover

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_BODY = 1000  # a JSON array of dial messages is one transaction


@dataclass(slots=True)
class DialOutcome:
    """What became of one dial message."""

    status: str  # accepted | duplicate | retry | requeue | failed | expired | cancelled | rejected
    detail: str = ""
    retry_after: float = 0.0
    call_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchOutcome:
    """What became of the legs of one dial message (one leg or a batch)."""

    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0  # cancelled by the scheduler before a worker took the message
    rejected: int = 0  # JSON messages refused before anything was stored
    retry: list[tuple[str, str]] = field(default_factory=list)  # (leg id, correlation_id)
    retry_after: float = 0.0
    requeue: str = ""  # set: this worker cannot take the message at all (why)
    detail: str = ""

    def note_failed(self, why: str) -> None:
        self.failed += 1
        self.detail = why

    def retry_later(self, legs: Sequence[tuple[Any, str, str]], after: float, why: str) -> None:
        self.retry.extend((text, correlation_id) for _, text, correlation_id in legs)
        self.retry_after = max(self.retry_after, after)
        self.detail = why

    def summary(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "failed": self.failed, "expired": self.expired, "cancelled": self.cancelled,
                "rejected": self.rejected,
                "retried": len(self.retry)}


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


class WorkerRuntime(WorkerMaintenance, TrunkServices):
    """One worker's signaling service, leg book, recorder, limits, heartbeat and recovery.

    Plain Python: the Celery bootstep starts and stops it, the tasks call `handle_dial` and
    `handle_control`; tests can drive it without Celery.
    """

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

    # --- dial messages (the queue contract, docs/dial-message.md) -----------------------------

    def dead_letter(self, raw: bytes, why: str) -> None:
        """Keep a refused message (the sink is Redis by default; a broker DLX may replace it)."""
        self.dead_letters(raw, why)

    def handle_dial_messages(self, raw: bytes, enqueued_at: float | None = None) -> BatchOutcome:
        """Validate a JSON dial message (or a JSON array of them), store the legs
        idempotently in one transaction, then claim and dial them like leg messages.

        A bad message is refused before anything is stored: a terminal `rejected` event naming
        the bad fields and a dead-letter copy; the good messages of an array go on. A message
        past its `not_after` is stored, claimed and ended as `expired` without an INVITE.
        The leg id is derived from (trunk, correlation_id), so a repeated or redelivered
        message finds the same row and loses the claim: one leg, one CDR and one terminal
        event per correlation_id, however often it is published.
        """
        outcome = BatchOutcome()
        if not self.accepting:
            outcome.requeue = "worker is stopping"
            return outcome
        try:
            decoded = json.loads(raw)
        except ValueError as error:
            self._reject(raw, {"request": f"not JSON: {error}"})
            outcome.rejected += 1
            return outcome
        items = decoded if isinstance(decoded, list) else [decoded]
        if len(items) > MAX_MESSAGES_PER_BODY:
            self._reject(raw, {"request": f"{len(items)} messages in one body (at most "
                                          f"{MAX_MESSAGES_PER_BODY})"})
            outcome.rejected += 1
            return outcome
        messages: list[DialMessage] = []
        for item in items:
            try:
                messages.append(self._resolve(item))
            except InvalidDialRequest as error:
                self._reject(raw if item is decoded else _dump(item), error.errors)
                outcome.rejected += 1
        if not messages:
            return outcome
        stored = [(message_leg_id(m.trunk, m.correlation_id), m) for m in messages]
        try:
            legs = self.repository.run(_insert_legs, stored)
        except Exception as error:
            self._raise_unless_transient(error, "storing dial messages' legs")
            outcome.requeue = "PostgreSQL unavailable while storing the legs"
            return outcome
        waiting = [(str(leg.id), leg.correlation_id) for leg in legs
                   if leg.state not in TERMINAL_STATES]
        outcome.duplicates += len(legs) - len(waiting)
        self.stats["duplicates"] += len(legs) - len(waiting)
        # an expired message is claimed like any other and ended by _hand_over, undialled
        dialled = self.handle_dial_batch(self.trunk.name, waiting, enqueued_at)
        dialled.rejected, dialled.duplicates = outcome.rejected, (
            dialled.duplicates + outcome.duplicates)
        return dialled

    def _resolve(self, item: Any) -> DialMessage:
        """The validated message with its `to` as a Request-URI of this worker's trunk."""
        message = parse_dial_message(item)
        if message.trunk != self.trunk.name:
            raise InvalidDialRequest(
                {"trunk": f"{message.trunk!r} arrived on the queue of {self.trunk.name!r}"})
        self.failover.check_route(message)
        return message.with_request_uri(self.trunk.request_uri(message.to))

    def _reject(self, raw: bytes, errors: dict[str, str]) -> None:
        correlation_id, scenario = _salvage(raw)
        event = rejected_event(self.trunk.name, correlation_id, scenario, errors)
        self.dead_letter(raw, describe(errors))
        self.stream_writer.write([event])
        self.stats["rejected"] += 1
        log.warning("dial message rejected: %s", describe(errors),
                    extra=call_fields(correlation_id=event.correlation_id,
                                      trunk=self.trunk.name))

    def _publish_dial_body(self, trunk: str, body: bytes) -> None:
        """A dial message for another trunk's queue (a failed-over call's next attempt)."""
        if self.app is None:
            raise RuntimeError("no Celery app to hand the call over with")
        publish_dial_body(self.app, trunk, body)

    def retry_dials_later(self, legs: Sequence[tuple[str, str]], countdown: float) -> None:
        """Stored legs the limits cannot admit yet go back as a leg-id batch task message
        (published before the JSON message is acknowledged: nothing is dropped between)."""
        if self.app is None:
            raise RuntimeError("no Celery app to publish the retry with")
        queue = dial_queue_name(self.trunk.name)
        self.app.send_task(
            DIAL_BATCH_TASK, kwargs={"trunk": self.trunk.name,
                                     "legs": [list(leg) for leg in legs], "enqueued_at": None},
            queue=queue, routing_key=queue, countdown=countdown, ignore_result=True,
        )

    # --- dials ---------------------------------------------------------------------------------

    def handle_dial(
        self, leg_id: str, trunk: str, correlation_id: str = "", enqueued_at: float | None = None
    ) -> DialOutcome:
        """Take the trunk's limits, claim the leg and hand it to the loop (one dial message)."""
        batch = self.handle_dial_batch(trunk, [(leg_id, correlation_id)], enqueued_at)
        if batch.requeue:
            return DialOutcome("requeue", batch.requeue)
        if batch.retry:
            return DialOutcome("retry", batch.detail, retry_after=batch.retry_after)
        status = ("accepted" if batch.accepted else "duplicate" if batch.duplicates
                  else "expired" if batch.expired else "cancelled" if batch.cancelled
                  else "failed")
        return DialOutcome(status, batch.detail)

    def handle_dial_batch(
        self, trunk: str, legs: Sequence[tuple[str, str]], enqueued_at: float | None = None
    ) -> BatchOutcome:
        """Take the trunk's limits for the legs, claim them and hand them to the loop.

        Two round trips for the whole message (one Redis script, one UPDATE … RETURNING);
        legs are only read when their claim lost, to say why. Legs the limits refuse come back
        in `retry`. The INVITEs go out on the loop after the task returned: a leg that cannot
        be dialed there still ends with an event and a CDR.
        """
        outcome = BatchOutcome()
        if not self.accepting:
            outcome.requeue = "worker is stopping"
            return outcome
        if trunk != self.trunk.name:
            outcome.requeue = f"this worker serves trunk {self.trunk.name!r}"
            return outcome
        valid: list[tuple[uuid.UUID, str, str]] = []
        for leg_id, correlation_id in legs:
            try:
                valid.append((operations.as_uuid(leg_id), leg_id, correlation_id))
            except ValueError:
                outcome.note_failed(f"leg id {leg_id!r} is not a UUID")
        if not valid:
            self._count(outcome)
            return outcome
        # Room first, limits next: a CPS slot is taken just before its INVITE goes out.
        reserved = self.feeder.reserve(len(valid))
        accepted_before = outcome.accepted
        try:
            self._admit_claim_hand_over(trunk, valid, outcome, enqueued_at)
        finally:
            self.feeder.release(reserved - (outcome.accepted - accepted_before))
        self._count(outcome)
        return outcome

    def _admit_claim_hand_over(
        self, trunk: str, valid: list[tuple[uuid.UUID, str, str]], outcome: BatchOutcome,
        enqueued_at: float | None,
    ) -> None:
        if not self.gate.is_up():
            why = f"trunk {trunk} is down (OPTIONS health check): not dialled"
            self._claim_and_hand_over(valid, outcome, enqueued_at, refuse=why)
            return
        try:
            admission = self.limits.admit_many(
                trunk, [text for _, text, _ in valid],
                max_concurrent=self.trunk.max_concurrent, cps=self.gate.cps(),
            )
        except REDIS_UNAVAILABLE:
            outcome.retry_later(valid, 1.0, "Redis unavailable for the trunk limits")
            return
        admitted, refused = valid[:admission.admitted], valid[admission.admitted:]
        if refused:
            if admission.refused_by == "cps":
                outcome.retry_later(refused, admission.retry_after + random.random() * 0.05,
                                    "cps reached")
            else:
                outcome.retry_later(refused, 0.1 + random.random() * 0.4,
                                    "max_concurrent reached")
        if admitted:
            self._claim_and_hand_over(admitted, outcome, enqueued_at)

    def _claim_and_hand_over(
        self, admitted: list[tuple[uuid.UUID, str, str]], outcome: BatchOutcome,
        enqueued_at: float | None, *, refuse: str = "",
    ) -> None:
        """Claim the legs and dial them; with `refuse`, end them undialled for that reason."""
        try:
            # The token is drawn once: a retry after a lost commit answer wins its claims again.
            claimed = self.repository.run_connection(
                operations.claim_for_dial, worker=self.owner, token=uuid.uuid4(),
                at=utc_now(), leg_ids=[leg for leg, _, _ in admitted],
            )
        except Exception as error:
            self._release_quietly([text for _, text, _ in admitted])
            self._raise_unless_transient(error, "claiming legs")
            outcome.retry_later(admitted, 1.0, "PostgreSQL unavailable while claiming")
            return
        self.observability.claimed(len(claimed), enqueued_at)
        won = {leg.leg_id for leg in claimed}
        lost = [item for item in admitted if item[0] not in won]
        if lost:
            self._not_claimed(lost, outcome)
        notes = self._cancel_notes([leg.correlation_id for leg in claimed])
        for leg in claimed:
            self._hand_over(leg, outcome, refuse, notes)

    def _not_claimed(self, lost: list[tuple[uuid.UUID, str, str]], outcome: BatchOutcome) -> None:
        """Why claims lost (a redelivered or repeated message, or no such leg)."""
        try:
            found = self.repository.run_connection(
                operations.leg_states, [leg for leg, _, _ in lost]
            )
        except Exception as error:
            self._raise_unless_transient(error, "reading legs")
            outcome.retry_later(lost, 1.0, "PostgreSQL unavailable while reading legs")
            return
        # Live legs keep their lease (its member is the leg id, held by the leg's owner).
        self._release_quietly([
            text for leg, text, _ in lost if leg not in found or found[leg][0] in TERMINAL_STATES
        ])
        for leg, text, correlation_id in lost:
            fields = call_fields(correlation_id=correlation_id, trunk=self.trunk.name,
                                 leg_id=text)
            if leg not in found:
                outcome.note_failed(f"no leg {leg} in the database")
                log.warning("dial message for a leg that is not in the database", extra=fields)
            else:
                state, owner = found[leg]
                outcome.duplicates += 1
                outcome.detail = f"leg is already {state.value} ({owner})"
                log.debug("dial message again: %s", outcome.detail, extra=fields)

    def _context(self, leg: ClaimedLeg) -> LegContext:
        return LegContext(
            leg_id=str(leg.leg_id), trunk=self.trunk.name, correlation_id=leg.correlation_id,
            scenario=leg.scenario, to_uri=leg.request_uri, leg_uuid=leg.leg_id,
            from_uri=f"sip:{leg.caller_user or self.trunk.caller_user or 'outbound'}@"
                     f"{self.options.bind_host}",
        )

    def _hand_over(self, leg: ClaimedLeg, outcome: BatchOutcome, refuse: str | None = None,
                   notes: Mapping[str, CancelNote] | None = None) -> None:
        """Dial a claimed leg, or end it undialled: cancelled by its scheduler before it was
        taken (`notes`: read here when the caller did not read them for a batch; a cancelled
        leg never fails over), past its not_after, or `refuse` (its trunk is down, so a trunk
        group hands it to the next trunk)."""
        context = self._context(leg)
        try:
            message = validate_dial_fields(dict(leg.request))
            request = self.trunk.build_request(message)
        except (InvalidDialRequest, ValueError) as error:
            reason = f"stored request is not dialable: {error}"
            self._fail_before_invite(context, reason)
            outcome.note_failed(reason)
            return
        if notes is None:
            notes = self._cancel_notes([leg.correlation_id])
        note = notes.get(leg.correlation_id)
        if note is not None:  # before the routing note: a cancelled leg never fails over
            self._end_cancelled(context, note)
            outcome.cancelled += 1
            return
        self._note_routing(context, leg, message, request)
        if message.expired(time.time()):
            self._end_expired(context, message)
            outcome.expired += 1
            return
        if refuse:
            self._end_refused(context, refuse)
            outcome.note_failed(refuse)
            return
        refusal = self._registration_refusal()
        if refusal:
            self._fail_before_invite(context, refusal)
            outcome.note_failed(refusal)
            return
        context.stir_attest = message.stir_attest
        self.book.register(context)
        self.feeder.submit(context, request)
        outcome.accepted += 1

    def _cancel_notes(self, correlation_ids: list[str]) -> Mapping[str, CancelNote]:
        try:
            return read_notes(self.redis, self.settings, self.trunk.name, correlation_ids)
        except REDIS_UNAVAILABLE:
            # Redis just admitted these legs (the limits); losing it in between is rare, and
            # a leg claimed cannot wait: it is dialled, and a cancel then goes to this worker.
            log.warning("Redis unavailable reading cancel notes: %d leg(s) dialled unchecked",
                        len(correlation_ids))
            return {}

    def _end_cancelled(self, context: LegContext, note: CancelNote) -> None:
        """A claimed leg its scheduler cancelled before a worker took the message: a CDR and
        the terminal event `cancelled`, no INVITE."""
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="cancelled", disposition=Disposition.CANCELLED,
            reason=f"not dialled: {note.reason}", hangup_reason=HangupReason.NORMAL,
        ))

    def _note_routing(
        self, context: LegContext, leg: ClaimedLeg, message: DialMessage, request: DialRequest
    ) -> None:
        """What the leg's end needs for failover: the message, its route and attempt."""
        context.request = leg.request
        context.route, context.attempt, context.tried = (
            message.route, message.attempt, message.tried)
        target = request.target
        located = self.trunk.locate and target.signaling_addr == self.trunk.proxy
        if target.signaling_addr and not located:  # located targets are noted as tried
            transport = (target.transport or Transport.UDP).value.lower()
            context.targets.append(f"{transport}:{target.signaling_addr}")

    def _end_expired(self, context: LegContext, message: DialMessage) -> None:
        """A claimed leg whose not_after passed: a CDR and the terminal event `expired`."""
        not_after = message.not_after.isoformat() if message.not_after else ""
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="expired", disposition=Disposition.FAILED,
            reason=f"not dialled: not_after {not_after} had passed when the worker took it",
            cause=LocalCause.EXPIRED,
        ))

    def _end_refused(self, context: LegContext, reason: str) -> None:
        """A claimed leg the trunk cannot take (down): a CDR and the terminal event `failed`,
        disposition congestion (a capacity outcome: another trunk or a later retry may try)."""
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="failed", disposition=Disposition.CONGESTION,
            reason=reason, error=reason, cause=LocalCause.TRUNK_DOWN,
        ))

    def _count(self, outcome: BatchOutcome) -> None:
        self.stats["accepted"] += outcome.accepted
        self.stats["duplicates"] += outcome.duplicates
        self.stats["failed"] += outcome.failed
        self.stats["expired"] += outcome.expired
        self.stats["cancelled"] += outcome.cancelled
        self.stats["retries"] += len(outcome.retry)

    def _fail_before_invite(
        self, context: LegContext, reason: str, cause: LocalCause = LocalCause.BAD_TARGET
    ) -> None:
        """End a claimed leg that never got its INVITE out (any thread)."""
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="failed", reason=reason,
            disposition=Disposition.FAILED, error=reason, cause=cause,
        ))
        log.warning("failed before its INVITE: %s", reason, extra=leg_fields(context))

    @staticmethod
    def _raise_unless_transient(error: Exception, doing: str) -> None:
        if not is_transient(error):
            raise error
        log.warning("PostgreSQL unavailable while %s: %s", doing, error.__class__.__name__)

    def _release_quietly(self, leg_ids: list[str]) -> None:
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            self.limits.release_leases(self.trunk.name, leg_ids)


def _insert_legs(
    session: Session, stored: Sequence[tuple[uuid.UUID, DialMessage]]
) -> list[Leg]:
    """Store dial messages' legs in one transaction (operations.insert_leg: idempotent)."""
    return [operations.insert_leg(session, message, leg_id)[0] for leg_id, message in stored]


def _dump(item: Any) -> bytes:
    return json.dumps(item, separators=(",", ":"), default=str).encode()


def _salvage(raw: bytes) -> tuple[str, str]:
    """The correlation_id and scenario of a refused message, when they can be read at all."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    correlation_id, scenario = data.get("correlation_id"), data.get("scenario")
    return (correlation_id if isinstance(correlation_id, str) else "")[:255], (
        scenario if isinstance(scenario, str) else "")[:32]
