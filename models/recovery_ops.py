"""Crash recovery's queries: which owners hold live legs, adopting a dead owner's legs (with
its unpublished outbox rows) in one transaction, and the legs still waiting for a worker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import outbox_ops
from models.enums import SIGNALING_STATES, LegState
from models.legs import Leg


@dataclass(frozen=True, slots=True)
class AdoptedLeg:
    """A leg taken over from a dead owner, its last event seq and its latest dialog state as
    stored in the outbox payloads (None when no event carried one)."""

    leg: Leg
    last_seq: int
    dialog: Mapping[str, Any] | None


def live_owners(session: Session, trunk: str, exclude: str) -> list[str]:
    """Owners of this trunk's legs that hold SIP state, other than `exclude`."""
    statement = (
        select(Leg.owner_worker)
        .where(
            Leg.trunk == trunk,
            Leg.state.in_(sorted(SIGNALING_STATES)),
            Leg.owner_worker.is_not(None),
            Leg.owner_worker != exclude,
        )
        .distinct()
    )
    return [owner for owner in session.scalars(statement) if owner]


def adopt(session: Session, dead: str, rescuer: str) -> list[AdoptedLeg]:
    """Take over a dead owner's live legs and its unpublished outbox rows (one transaction)."""
    legs = list(session.scalars(
        update(Leg)
        .where(Leg.owner_worker == dead, Leg.state.in_(sorted(SIGNALING_STATES)))
        .values(owner_worker=rescuer, updated_at=func.now())
        .returning(Leg)
        .execution_options(synchronize_session=False)
    ))
    outbox_ops.retag_unpublished(session, dead, rescuer)
    if not legs:
        return []
    last_seq: dict[str, int] = {}
    dialogs: dict[str, Mapping[str, Any]] = {}
    for leg_id, payload in outbox_ops.payloads_of_legs(session, [str(leg.id) for leg in legs]):
        last_seq[leg_id] = max(last_seq.get(leg_id, 0), int(payload.get("seq", 0)))
        if payload.get("dialog"):
            dialogs[leg_id] = payload["dialog"]
    return [
        AdoptedLeg(leg, last_seq.get(str(leg.id), 0), dialogs.get(str(leg.id))) for leg in legs
    ]


def queued_legs(session: Session, trunk: str, limit: int = 10_000) -> list[tuple[str, str]]:
    """(leg id, correlation_id) of this trunk's legs still waiting for a worker."""
    statement = (
        select(Leg.id, Leg.correlation_id)
        .where(Leg.trunk == trunk, Leg.state == LegState.QUEUED)
        .order_by(Leg.created_at)
        .limit(limit)
    )
    return [(str(leg_id), correlation_id) for leg_id, correlation_id in session.execute(statement)]
