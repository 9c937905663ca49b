"""The dial path of a worker: take the trunk's limits for stored legs, claim them, hand them to
the signaling loop (or end them undialled). A mixin of WorkerRuntime, whose state it uses
(declared below); JSON dial messages reach it through workers.runtime.claims.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from models import operations
from models.dial_fields import InvalidDialRequest, validate_dial_fields
from models.enums import TERMINAL_STATES
from models.operations import ClaimedLeg
from models.repository import Repository
from models.times import utc_now
from models.transient import is_transient
from sipstack.cdr import Disposition, HangupReason
from sipstack.dial import DialRequest
from sipstack.outcome import LocalCause
from sipstack.transport import Transport
from workers.config.settings import Settings
from workers.config.trunks import TrunkConfig
from workers.contract.dial_message import DialMessage
from workers.coordination.cancel_notes import CancelNote, read_notes
from workers.coordination.limits import TrunkLimits
from workers.events.stream import REDIS_UNAVAILABLE
from workers.observability.attach import WorkerObservability, leg_fields
from workers.observability.log_format import call_fields
from workers.runtime.admission import TrunkGate
from workers.runtime.book import LegBook, LegContext, PendingEvent
from workers.runtime.feeder import DialFeeder
from workers.runtime.outcomes import BatchOutcome, DialOutcome

log = logging.getLogger("workers.runtime.worker")


class _Options(Protocol):
    @property
    def bind_host(self) -> str: ...


class DialPath:
    """Admission, claim and hand-over of stored legs (mixed into WorkerRuntime)."""

    # WorkerRuntime's state the dial path uses
    accepting: bool
    trunk: TrunkConfig
    owner: str
    options: _Options
    repository: Repository
    limits: TrunkLimits
    gate: TrunkGate
    feeder: DialFeeder
    book: LegBook
    observability: WorkerObservability
    stats: dict[str, int]
    redis: Any
    settings: Settings

    def _record(self, pending: PendingEvent | None) -> None:
        raise NotImplementedError  # WorkerRuntime's

    def _registration_refusal(self) -> str:
        raise NotImplementedError  # TrunkServices' (earlier in WorkerRuntime's bases)

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
