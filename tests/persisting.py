"""The production write path, one call at a time, for tests that check what it stores.

The worker writes leg transitions, CDRs and outbox rows only through the recorder
(`workers.runtime.recorder.persist_batch` on `Repository.run_connection`); these helpers run the
same operations for a single item so a test can assert on one write's result.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select

from models import operations, outbox_ops
from models.enums import SIGNALING_STATES, LegState
from models.legs import Leg
from models.operations import PendingCdr, Transition
from models.repository import Repository
from sipstack.cdr import CdrRecord


def record_transition(
    repository: Repository,
    leg_id: uuid.UUID | str,
    state: LegState | str,
    at: float | datetime,
    **fields: Any,
) -> bool:
    """Move a leg to `state`; False when its state does not allow it."""
    transition = Transition.make(leg_id, state, at, **fields)
    return repository.run_connection(operations.apply_transitions, [transition]) == 1


def record_transitions(repository: Repository, transitions: list[Transition]) -> int:
    return repository.run_connection(operations.apply_transitions, transitions)


def mark_leg_ended(
    repository: Repository,
    leg_id: uuid.UUID | str,
    at: float | datetime,
    *,
    failed: bool = False,
    status_code: int | None = None,
    reason: str | None = None,
) -> bool:
    ending = Transition.ended(leg_id, at, failed=failed, status_code=status_code, reason=reason)
    return record_transitions(repository, [ending]) == 1


def write_cdr(
    repository: Repository, record: CdrRecord, worker: str, *, leg_id: uuid.UUID | str | None = None
) -> bool:
    """True when this call wrote the CDR, False when it already existed."""
    pending = PendingCdr(record, worker, operations.as_uuid(leg_id) if leg_id else None)
    return repository.run_connection(operations.insert_cdrs, [pending]) == 1


def write_cdrs(repository: Repository, pending: list[PendingCdr]) -> int:
    return repository.run_connection(operations.insert_cdrs, pending)


def add_outbox_event(
    repository: Repository, trunk: str, event_id: str, payload: dict[str, Any]
) -> bool:
    """False when `event_id` was already stored."""
    row = {"trunk": trunk, "event_id": event_id, "payload": payload}
    return repository.run_connection(outbox_ops.insert_outbox_rows, [row]) == 1


class Unpublished(NamedTuple):
    event_id: str
    payload: dict[str, Any]


def fetch_unpublished(
    repository: Repository, limit: int = 100, trunk: str | None = None
) -> list[Unpublished]:
    rows = repository.run(outbox_ops.fetch_unpublished, limit, trunk=trunk)
    return [Unpublished(event_id, payload) for event_id, payload in rows]


def legs_owned_by(
    repository: Repository, worker: str, states: Iterable[LegState | str] = SIGNALING_STATES
) -> list[Leg]:
    """The legs `worker` holds in `states`, oldest first (what crash recovery must finish)."""
    with repository.session() as session:
        return list(session.scalars(
            select(Leg)
            .where(Leg.owner_worker == worker, Leg.state.in_([LegState(s) for s in states]))
            .order_by(Leg.created_at)
        ))
