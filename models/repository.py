"""The repository the workers call (sync: Celery threads, CLI): legs, CDRs and the event outbox.

Every method is one transaction, retried with tenacity on transient errors only (connection
lost, server restarting; never an integrity error). Each method is safe to repeat: claims carry
a token, inserts are ON CONFLICT DO NOTHING, transitions only move forward. From the asyncio
signaling loop use `models.async_repository.AsyncRepository`, or better the non-blocking
`models.writer.CdrWriter` for the high-rate transition, CDR and outbox writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import tenacity
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from models import operations
from models.db import make_engine, make_session_factory
from models.dial_fields import DialFields, validate_dial_fields
from models.enums import SIGNALING_STATES, LegState
from models.legs import Leg
from models.operations import PendingCdr, PendingOutboxEvent, Transition
from models.outbox import OutboxEvent
from models.times import to_datetime, utc_now
from models.transient import retry_policy
from sipstack.cdr import CdrRecord

T = TypeVar("T")


class Repository:
    def __init__(self, engine: Engine, *, retry: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self._sessions = make_session_factory(engine)
        self._retry = dict(retry) if retry is not None else retry_policy()

    @classmethod
    def from_url(cls, url: str | URL | None = None) -> Repository:
        """A repository on `url` (default: OUTBOUND_DATABASE_URL)."""
        return cls(make_engine(url))

    def run(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `operation(session, *args, **kwargs)` in one transaction, retrying transient
        errors; every retry is a fresh transaction on a fresh connection."""
        for attempt in tenacity.Retrying(**self._retry):
            with attempt, self._sessions.begin() as session:
                return operation(session, *args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def run_connection(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run` on a plain Core Connection instead of a Session (the worker's hot path:
        operations that take `operations.Executor` skip the ORM session around them)."""
        for attempt in tenacity.Retrying(**self._retry):
            with attempt, self.engine.begin() as connection:
                return operation(connection, *args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    # --- legs ---------------------------------------------------------------------------------

    def create_leg(self, fields: Mapping[str, Any] | DialFields) -> tuple[Leg, bool]:
        """Validate and store a queued leg. Raises InvalidDialRequest before touching the
        database. A live leg with the same correlation_id is returned with created=False."""
        valid = validate_dial_fields(fields)
        return self.run(operations.insert_leg, valid, uuid.uuid4())

    def get_leg(self, leg_id: uuid.UUID | str) -> Leg | None:
        return self.run(operations.get_leg, leg_id)

    def live_leg(self, correlation_id: str) -> Leg | None:
        return self.run(operations.live_leg, correlation_id)

    def claim_leg(
        self,
        *,
        worker: str,
        leg_id: uuid.UUID | str | None = None,
        correlation_id: str | None = None,
        at: float | datetime | None = None,
    ) -> Leg | None:
        """Claim a queued leg for `worker`; None when another claim won or it is not queued."""
        return self.run(
            operations.claim_leg,
            worker=worker,
            token=uuid.uuid4(),
            at=to_datetime(at) if at is not None else utc_now(),
            leg_id=operations.as_uuid(leg_id) if leg_id is not None else None,
            correlation_id=correlation_id,
        )

    def record_transition(
        self, leg_id: uuid.UUID | str, state: LegState | str, at: float | datetime, **fields: Any
    ) -> bool:
        """Move a leg to `state` and store dialog fields (call_id, local_tag, remote_tag,
        local_cseq, invite_branch, remote_target, route_set, transport, peer_addr,
        last_status_code, last_reason). False when the leg was not in a state that allows it."""
        transition = Transition.make(leg_id, state, at, **fields)
        return self.run(operations.apply_transitions, [transition]) == 1

    def record_transitions(self, transitions: Sequence[Transition]) -> int:
        return self.run(operations.apply_transitions, transitions)

    def mark_leg_ended(
        self,
        leg_id: uuid.UUID | str,
        at: float | datetime,
        *,
        failed: bool = False,
        status_code: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """End a live leg ('failed' when `failed`); False when it had already ended."""
        ending = Transition.ended(leg_id, at, failed=failed, status_code=status_code, reason=reason)
        return self.record_transitions([ending]) == 1

    def legs_owned_by(
        self, worker: str, states: Iterable[LegState | str] = SIGNALING_STATES
    ) -> list[Leg]:
        """The legs `worker` holds in `states` (default: every state after queued, before the
        end), oldest first: what crash recovery must finish."""
        return self.run(operations.legs_owned_by, worker, [LegState(s) for s in states])

    def adopt_legs(
        self,
        from_worker: str,
        to_worker: str,
        states: Iterable[LegState | str] = SIGNALING_STATES,
    ) -> list[Leg]:
        """Move a dead worker's live legs to `to_worker` atomically and return them."""
        return self.run(
            operations.adopt_legs,
            from_worker,
            to_worker,
            [LegState(s) for s in states],
            utc_now(),
        )

    # --- CDRs ---------------------------------------------------------------------------------

    def write_cdr(
        self, record: CdrRecord, worker: str, *, leg_id: uuid.UUID | str | None = None
    ) -> bool:
        """Write a leg's CDR once; True when this call wrote it, False when it already existed."""
        pending = PendingCdr(record, worker, operations.as_uuid(leg_id) if leg_id else None)
        return self.run(operations.insert_cdrs, [pending]) == 1

    def write_cdrs(self, pending: Sequence[PendingCdr]) -> int:
        return self.run(operations.insert_cdrs, pending)

    # --- outbox (the workers write and publish it through workers.events.stream) ------------

    def add_outbox_event(self, trunk: str, event_id: str, payload: Mapping[str, Any]) -> bool:
        """Queue an event for the stream; False when `event_id` was already queued."""
        event = PendingOutboxEvent(trunk, event_id, payload)
        return self.run(operations.insert_outbox_events, [event]) == 1

    def fetch_unpublished(self, limit: int = 100, trunk: str | None = None) -> list[OutboxEvent]:
        """The oldest events not yet on the stream, oldest first."""
        return self.run(operations.fetch_unpublished, limit, trunk)

    def purge_published(self, before: float | datetime) -> int:
        return self.run(operations.purge_published, to_datetime(before))

    def session(self) -> Session:
        """A plain session for ad-hoc reads (reporting, tests); the caller closes it."""
        return self._sessions()
