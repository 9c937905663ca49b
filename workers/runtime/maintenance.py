"""A worker's maintenance rounds: ending dead owners' legs (crash recovery), re-publishing the
dials a broker reset lost, purging published outbox rows. A mixin of WorkerRuntime, whose
state it uses (declared below)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from celery import Celery

from models.enums import LegState
from models.repository import Repository
from sipstack.cdr import Disposition
from workers.celery.app import DIAL_BATCH_TASK, dial_queue_name
from workers.config.trunks import TrunkConfig
from workers.coordination.recovery import (
    BrokerResetWatch,
    OwnerWatch,
    RecoveredLeg,
    adopt,
    live_owners,
    queued_legs,
    recovery_cseq,
)
from workers.events.entries import REDIS_UNAVAILABLE
from workers.events.publisher import EventPublisher
from workers.observability.attach import leg_fields
from workers.runtime.book import LegBook, LegContext, PendingEvent
from workers.signaling.manager import SignalingService

log = logging.getLogger("workers.runtime.worker")


class WorkerMaintenance:
    """Maintenance of a running worker (mixed into WorkerRuntime)."""

    # WorkerRuntime's state these rounds use
    app: Celery | None
    trunk: TrunkConfig
    owner: str
    repository: Repository
    publisher: EventPublisher
    book: LegBook
    signaling: SignalingService
    owner_watch: OwnerWatch
    broker_watch: BrokerResetWatch | None
    stats: dict[str, int]
    _stop_maintenance: threading.Event
    _next_purge: float

    def _record(self, pending: PendingEvent | None) -> None:
        raise NotImplementedError  # WorkerRuntime's

    def _maintain_forever(self, interval: float) -> None:
        while not self._stop_maintenance.wait(interval):
            try:
                self.maintain()
            except Exception as error:
                log.warning("maintenance round failed: %s", error)

    def maintain(self) -> None:
        """One round: end dead owners' legs, re-publish dials a broker reset lost."""
        try:
            owners = self.repository.run(live_owners, self.trunk.name, self.owner)
            for dead in self.owner_watch.dead(owners):
                self.recover_owner(dead)
        except REDIS_UNAVAILABLE as error:
            log.warning("recovery check skipped, Redis unavailable: %s", error)
        if self.broker_watch is not None:
            try:
                if self.broker_watch.reset_detected():
                    self.requeue_queued("broker was reset")
            except REDIS_UNAVAILABLE as error:
                log.warning("broker check skipped, Redis unavailable: %s", error)
        if time.monotonic() >= self._next_purge:
            # Published events are kept two days: recovery reads a live leg's last seq from
            # them, and no leg lives longer than a day (dial_fields caps every duration).
            self._next_purge = time.monotonic() + 600
            purged = self.repository.purge_published(time.time() - 2 * 86400)
            if purged:
                log.info("purged %d published outbox events", purged)

    def requeue_queued(self, why: str, chunk: int = 100) -> int:
        """Publish dial messages again for every queued leg of the trunk, a batch message per
        `chunk` legs (duplicates lose the claim; lost messages are replaced)."""
        legs = self.repository.run(queued_legs, self.trunk.name)
        if not legs or self.app is None:
            return 0
        queue = dial_queue_name(self.trunk.name)
        for start in range(0, len(legs), chunk):
            self.app.send_task(
                DIAL_BATCH_TASK,
                kwargs={"trunk": self.trunk.name,
                        "legs": [list(leg) for leg in legs[start:start + chunk]],
                        "enqueued_at": None},
                queue=queue, routing_key=queue, ignore_result=True,
            )
        self.stats["requeued"] += len(legs)
        log.warning("%s: re-published %d queued dial(s) of %s", why, len(legs),
                    self.trunk.name)
        return len(legs)

    def recover_owner(self, dead: str) -> list[str]:
        """Adopt a dead owner's legs and end each one; returns the adopted leg ids."""
        adopted = self.repository.run(adopt, dead, self.owner)
        self.owner_watch.forget(dead)
        self.publisher.defer()  # its unpublished events (now ours) go out before the ends
        if not adopted:
            return []
        log.warning("owner %s is dead: ending its %d leg(s)", dead, len(adopted))
        for leg in adopted:
            self._end_recovered(dead, leg)
        self.stats["recovered"] += len(adopted)
        if self.broker_watch is not None:
            # A Redis broker loses the message a dead worker had popped (BRPOP) but not yet
            # recorded as unacknowledged (kombu does that in a second command): a dial retry
            # of a stored leg can go that way. Its leg is still queued: publish it again
            # (a leg that has its message too loses the second claim).
            self.requeue_queued(f"owner {dead} died")
        return [leg.leg_id for leg in adopted]

    def _end_recovered(self, dead: str, leg: RecoveredLeg) -> None:
        context = LegContext(
            leg_id=leg.leg_id, trunk=leg.trunk, correlation_id=leg.correlation_id,
            scenario=leg.scenario, to_uri=leg.request_uri, call_id=leg.call_id or "",
            seq=leg.last_seq, started_at=leg.invited_at,
            first_provisional_at=leg.first_provisional_at, answered_at=leg.answered_at,
            established=leg.state == LegState.ESTABLISHED,
        )
        reason = f"owner worker {dead} died; ended by recovery"
        log.info("recovery: ending a %s leg of dead worker %s", leg.state.value, dead,
                 extra=leg_fields(context))
        snapshot = leg.snapshot
        if snapshot is not None and leg.state != LegState.CLAIMED:
            if leg.state == LegState.ESTABLISHED or leg.answered_at is not None:
                snapshot = dataclasses.replace(
                    snapshot, state="established",
                    answered_at=snapshot.answered_at or leg.answered_at,
                )
                snapshot = recovery_cseq(snapshot, time.time())
            self.book.register(context)
            try:
                self.signaling.call(self.signaling.manager.end_recovered, snapshot).result(10)
                return
            except Exception as error:
                log.error("recovery signaling failed: %s", error, extra=leg_fields(context))
                self.book.forget(context)
        # No INVITE on record (or signaling refused): nothing to CANCEL or BYE from here.
        self.book.register(context)
        self._record(self.book.synthetic_end(
            context, at=time.time(), state="failed" if leg.answered_at is None else "ended",
            reason=reason + " before its INVITE was recorded" if snapshot is None else reason,
            disposition=Disposition.FAILED if leg.answered_at is None else Disposition.ANSWERED,
        ))
