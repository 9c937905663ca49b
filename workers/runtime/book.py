"""Which leg a Call-ID or correlation_id belongs to, and the events it has waiting to be stored.

`LegBook` runs on the signaling loop: it knows which leg (row id, trunk, next seq) a Call-ID
or correlation_id belongs to and turns core events into `PendingEvent`s without blocking.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.enums import LegState, leg_state_for_event
from models.operations import PendingCdr, Transition
from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.dialog import DialogSnapshot
from sipstack.events import LegEvent, ProvisionalReceived
from sipstack.outcome import LocalCause, Outcome
from workers.coordination.recovery import (
    dialog_columns,
    snapshot_to_json,
)
from workers.events.stream import (
    StreamEvent,
)
from workers.observability.log_format import call_fields
from workers.routing.outcomes import leg_outcome

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LegContext:
    """What the worker keeps about one of its legs between events."""

    leg_id: str
    trunk: str
    correlation_id: str
    scenario: str
    from_uri: str = ""
    to_uri: str = ""
    call_id: str = ""
    seq: int = 0  # the last event seq used
    started_at: float | None = None
    first_provisional_at: float | None = None
    answered_at: float | None = None
    established: bool = False
    finished: bool = False  # its terminal event has been produced
    leg_uuid: uuid.UUID | None = None  # leg_id parsed once (every event's row write needs it)
    # Routing (docs/routing.md): the stored dial message, its trunk group, which attempt of
    # the correlation_id this leg is, the trunks tried before it and the targets it tried
    request: Mapping[str, Any] | None = None
    route: str = ""
    attempt: int = 1
    tried: tuple[str, ...] = ()
    targets: list[str] = field(default_factory=list)
    next_trunk: str | None = None  # set at the end: the trunk the call is handed to
    stir_attest: str = ""  # the dial's own STIR/SHAKEN attestation (empty: the trunk's)

    @property
    def leg_key(self) -> uuid.UUID:
        if self.leg_uuid is None:
            self.leg_uuid = uuid.UUID(self.leg_id)
        return self.leg_uuid

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """One event on its way to PostgreSQL and the stream; `extra` goes into the outbox row
    only (the dialog state crash recovery needs)."""

    context: LegContext
    event: StreamEvent
    transition: Transition | None
    cdr: PendingCdr | None = None
    extra: Mapping[str, Any] | None = None


# call_id -> the dialog snapshot of a live leg (None when the core no longer has it)
SnapshotSource = Callable[[str], DialogSnapshot | None]


@dataclass(frozen=True, slots=True)
class LegEnd:
    """What the worker adds to a leg's end: its typed outcome, and the trunk the call goes to
    next (None: this leg is the correlation_id's last attempt, its terminal event is final)."""

    outcome: Outcome
    next_trunk: str | None = None


# how a leg ended -> its LegEnd (the worker's routing; default: the outcome, no next trunk)
EndRouter = Callable[[LegContext, CdrRecord, LocalCause | None], LegEnd]


def outcome_only(_context: LegContext, record: CdrRecord, cause: LocalCause | None) -> LegEnd:
    return LegEnd(leg_outcome(record, cause=cause))


def routing_fields(context: LegContext, end: LegEnd) -> dict[str, str]:
    """The terminal event's routing fields (docs/events.md), as text."""
    return {
        "outcome": end.outcome.value,
        "attempt": str(context.attempt),
        "final": "false" if end.next_trunk else "true",
        "next_trunk": end.next_trunk or "",
        "routed_via": " ".join(context.targets),
    }


class LegBook:
    """The worker's live legs, keyed by correlation_id and Call-ID (signaling loop side).

    `register` may be called from any thread; everything else runs on the loop.
    """

    def __init__(
        self, worker: str, snapshots: SnapshotSource | None = None, *, trunk: str = "",
        end_router: EndRouter = outcome_only,
    ) -> None:
        self.worker = worker
        self.trunk = trunk
        self._end_router = end_router
        self._snapshots = snapshots
        self._by_correlation: dict[str, LegContext] = {}
        self._by_call_id: dict[str, LegContext] = {}
        self._lock = threading.Lock()

    def set_snapshot_source(self, snapshots: SnapshotSource) -> None:
        self._snapshots = snapshots

    def register(self, context: LegContext) -> LegContext:
        with self._lock:
            self._by_correlation[context.correlation_id] = context
            if context.call_id:
                self._by_call_id[context.call_id] = context
        return context

    def forget(self, context: LegContext) -> None:
        with self._lock:
            if self._by_correlation.get(context.correlation_id) is context:
                del self._by_correlation[context.correlation_id]
            if self._by_call_id.get(context.call_id) is context:
                del self._by_call_id[context.call_id]

    def live(self) -> list[LegContext]:
        with self._lock:
            return [ctx for ctx in self._by_correlation.values() if not ctx.finished]

    def find(
        self, *, leg_id: str | None = None, correlation_id: str | None = None,
        call_id: str | None = None,
    ) -> LegContext | None:
        # One dict lookup is atomic: the loop's per-event lookups take no lock.
        if correlation_id is not None:
            return self._by_correlation.get(correlation_id)
        if call_id is not None:
            return self._by_call_id.get(call_id)
        if leg_id is not None:
            with self._lock:
                return next(
                    (c for c in self._by_correlation.values() if c.leg_id == leg_id), None
                )
        return None

    def call_id_adopted(self, old: str, new: str, correlation_id: str) -> None:
        with self._lock:
            context = self._by_correlation.get(correlation_id) or self._by_call_id.get(old)
            if context is None:
                return
            self._by_call_id.pop(old, None)
            context.call_id = new
            self._by_call_id[new] = context

    def pending_for(self, event: LegEvent) -> PendingEvent | None:
        """Turn a core lifecycle event into a pending write; None for a leg we do not know."""
        context = self.find(correlation_id=event.correlation_id) or self.find(
            call_id=event.call_id
        )
        if context is None or context.finished:
            log.warning("event %s for unknown leg", event.state, extra=call_fields(
                call_id=event.call_id, correlation_id=event.correlation_id, trunk=self.trunk))
            return None
        if context.call_id != event.call_id:
            with self._lock:
                self._by_call_id.pop(context.call_id, None)
                context.call_id = event.call_id
                self._by_call_id[event.call_id] = context
        state = event.state
        if state == "invited":
            context.started_at = context.started_at or event.at
        elif state in ("provisional", "early_media"):
            context.first_provisional_at = context.first_provisional_at or event.at
        elif state == "established":
            context.answered_at = event.at
            context.established = True
        fields: dict[str, Any] = {"call_id": event.call_id}
        extra: dict[str, Any] | None = None
        if state in ("invited", "established") and self._snapshots is not None:
            snapshot = self._snapshots(event.call_id)
            if snapshot is not None:
                fields.update(dialog_columns(snapshot))
                extra = {"dialog": snapshot_to_json(snapshot)}
        if event.status_code is not None:
            fields["last_status_code"] = event.status_code
        if event.reason:
            fields["last_reason"] = event.reason[:500]
        has_sdp = isinstance(event, ProvisionalReceived) and event.has_sdp
        transition = Transition.make(
            context.leg_key, leg_state_for_event(state, has_sdp=has_sdp), event.at, **fields
        )
        cdr = None
        outcome = None
        if event.terminal:
            context.finished = True
            record: CdrRecord = event.cdr  # type: ignore[attr-defined]
            cdr, outcome = self._ending(context, record, None)
        stream_event = StreamEvent(
            trunk=context.trunk, leg_id=context.leg_id, seq=context.next_seq(), state=state,
            call_id=event.call_id, correlation_id=context.correlation_id,
            scenario=context.scenario, status_code=event.status_code, reason=event.reason,
            at=event.at, outcome=outcome,
        )
        return PendingEvent(context, stream_event, transition, cdr, extra)

    def _ending(
        self, context: LegContext, record: CdrRecord, cause: LocalCause | None
    ) -> tuple[PendingCdr, dict[str, str]]:
        """The leg's CDR and its terminal event's outcome fields (routing decided here)."""
        end = self._end_router(context, record, cause)
        context.next_trunk = end.next_trunk
        cdr = PendingCdr(
            record, self.worker, context.leg_key, outcome=end.outcome, attempt=context.attempt,
            routed_via=" ".join(context.targets) or None, next_trunk=end.next_trunk,
        )
        return cdr, {**record.outcome.as_text(), **routing_fields(context, end)}

    def synthetic_end(
        self,
        context: LegContext,
        *,
        at: float,
        state: str,
        reason: str,
        disposition: Disposition,
        hangup_reason: HangupReason = HangupReason.ERROR,
        status_code: int | None = None,
        error: str | None = None,
        cause: LocalCause | None = None,
    ) -> PendingEvent:
        """A terminal event and CDR the core did not produce: a leg that failed before its
        INVITE, was dropped at shutdown, or is ended by crash recovery."""
        context.finished = True
        call_id = context.call_id or f"{uuid.uuid4().hex}@no-invite.invalid"
        context.call_id = call_id
        record = CdrRecord(
            call_id=call_id, correlation_id=context.correlation_id, scenario=context.scenario,
            trunk=context.trunk, from_uri=context.from_uri, to_uri=context.to_uri,
            started_at=context.started_at if context.started_at is not None else at,
            first_provisional_at=context.first_provisional_at,
            answered_at=context.answered_at, ended_at=max(at, context.started_at or at),
            final_status_code=status_code if status_code is not None else (
                200 if context.answered_at is not None else None
            ),
            disposition=disposition, hangup_reason=hangup_reason, hangup_by=HangupBy.LOCAL,
            reason_text=reason, error=error,
        )
        leg_state = LegState.FAILED if state in ("failed", "expired") else LegState.ENDED
        fields: dict[str, Any] = {"last_reason": reason[:500]}
        if context.call_id:
            fields["call_id"] = call_id
        if status_code is not None:
            fields["last_status_code"] = status_code
        transition = Transition.make(context.leg_key, leg_state, at, **fields)
        cdr, outcome = self._ending(context, record, cause)
        stream_event = StreamEvent(
            trunk=context.trunk, leg_id=context.leg_id, seq=context.next_seq(), state=state,
            call_id=call_id, correlation_id=context.correlation_id, scenario=context.scenario,
            status_code=status_code, reason=reason, at=at, outcome=outcome,
        )
        return PendingEvent(context, stream_event, transition, cdr)
