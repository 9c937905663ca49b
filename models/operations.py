"""Each database write and read the workers need, as a function of an open Session.

The sync Repository calls these inside `sessionmaker.begin()`, the async one through
`AsyncSession.run_sync`, the CdrWriter with whole batches: one implementation for all three.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Table,
    Update,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.cdrs import Cdr, cdr_row
from models.dial_fields import DialFields
from models.enums import ALLOWED_PREDECESSORS, STATE_TIMESTAMP, TERMINAL_STATES, LegState
from models.legs import LIVE_LEG_CONDITION, Leg
from models.outbox import OutboxEvent
from models.times import to_datetime
from sipstack.cdr import CdrRecord
from sipstack.transport import Transport

# Dialog state and outcome columns a transition may set (anything else is a caller bug).
TRANSITION_FIELDS = frozenset(
    {
        "call_id",
        "local_tag",
        "remote_tag",
        "local_cseq",
        "invite_branch",
        "remote_target",
        "route_set",
        "transport",
        "peer_addr",
        "last_status_code",
        "last_reason",
    }
)

_legs: Table = Leg.__table__  # type: ignore[assignment]
_cdrs: Table = Cdr.__table__  # type: ignore[assignment]
_outbox: Table = OutboxEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Transition:
    """A leg moved to `state` at `at` (epoch seconds or datetime), with dialog fields."""

    leg_id: uuid.UUID
    state: LegState
    at: datetime
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls, leg_id: uuid.UUID | str, state: LegState | str, at: float | datetime, **fields: Any
    ) -> Transition:
        """Check the state and field names now, in the caller, not later in a writer thread."""
        target = LegState(state)
        if target not in ALLOWED_PREDECESSORS:
            raise ValueError(
                f"cannot record a transition to {target.value!r}: "
                "legs enter 'queued' through create_leg and 'claimed' through claim_leg"
            )
        unknown = sorted(set(fields) - TRANSITION_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown leg fields {unknown}; allowed: {', '.join(sorted(TRANSITION_FIELDS))}"
            )
        cleaned = dict(fields)
        if cleaned.get("transport") is not None:
            cleaned["transport"] = Transport.parse(str(cleaned["transport"]))
        if cleaned.get("route_set") is not None:
            cleaned["route_set"] = [str(route) for route in cleaned["route_set"]]
        return cls(as_uuid(leg_id), target, to_datetime(at), cleaned)


@dataclass(frozen=True, slots=True)
class PendingCdr:
    record: CdrRecord
    worker: str
    leg_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class PendingOutboxEvent:
    trunk: str
    event_id: str
    payload: Mapping[str, Any]


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _insert(session: Session, target: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL and SQLite spell it alike)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(target)
    if dialect == "sqlite":
        return sqlite.insert(target)
    raise ValueError(f"unsupported database dialect {dialect!r} (PostgreSQL or SQLite)")


# Keep the driver's row count for executemany too (SQLAlchemy drops it otherwise).
_ROWCOUNT = {"preserve_rowcount": True}


def _count(rowcount: int) -> int:
    # -1 means "unknown"; psycopg 3 and sqlite3 report sums for executemany, so it is not seen.
    return max(rowcount, 0)


def _not_terminal() -> Any:
    return Leg.state.not_in(sorted(TERMINAL_STATES))


# --- legs -------------------------------------------------------------------------------------


def insert_leg(session: Session, fields: DialFields, leg_id: uuid.UUID) -> tuple[Leg, bool]:
    """Insert a queued leg, or return the live leg that already has this correlation_id.

    `created` is True when the live leg carries `leg_id`, so a retry after a commit whose
    answer was lost still reports the leg as ours to enqueue.
    """
    values = {
        "id": leg_id,
        "correlation_id": fields.correlation_id,
        "scenario": fields.scenario,
        "script_id": fields.script_id,
        "trunk": fields.trunk,
        "request_uri": fields.request_uri,
        "signaling_addr": fields.signaling_addr,
        "caller_user": fields.caller_user,
        "caller_display_name": fields.caller_display_name,
        "request": fields.to_json(),
        "state": LegState.QUEUED,
    }
    statement = (
        _insert(session, Leg)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=[Leg.correlation_id], index_where=text(LIVE_LEG_CONDITION)
        )
        .returning(Leg)
    )
    for _ in range(3):
        inserted = session.scalars(statement).one_or_none()
        if inserted is not None:
            return inserted, True
        live = session.scalars(
            select(Leg).where(Leg.correlation_id == fields.correlation_id, _not_terminal())
        ).one_or_none()
        if live is not None:
            return live, live.id == leg_id
        # The live leg ended between our INSERT and SELECT: the key is free again.
    raise RuntimeError(f"correlation_id {fields.correlation_id!r} keeps changing; giving up")


def get_leg(session: Session, leg_id: uuid.UUID | str) -> Leg | None:
    return session.get(Leg, as_uuid(leg_id))


def live_leg(session: Session, correlation_id: str) -> Leg | None:
    return session.scalars(
        select(Leg).where(Leg.correlation_id == correlation_id, _not_terminal())
    ).one_or_none()


def claim_leg(
    session: Session,
    *,
    worker: str,
    token: uuid.UUID,
    at: datetime,
    leg_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> Leg | None:
    """Move a queued leg to 'claimed' for `worker` in one UPDATE … RETURNING.

    Exactly one caller wins. The same `token` wins again, so a retry after a lost commit
    answer gets its leg instead of None (a leg claimed and never dialed).
    """
    if (leg_id is None) == (correlation_id is None):
        raise ValueError("claim_leg needs exactly one of leg_id or correlation_id")
    key = (
        Leg.id == leg_id
        if leg_id is not None
        else and_(Leg.correlation_id == correlation_id, _not_terminal())
    )
    statement = (
        update(Leg)
        .where(
            key,
            or_(
                Leg.state == LegState.QUEUED,
                and_(Leg.state == LegState.CLAIMED, Leg.claim_token == token),
            ),
        )
        .values(
            state=LegState.CLAIMED,
            owner_worker=worker,
            claim_token=token,
            claimed_at=at,
            updated_at=at,
        )
        .returning(Leg)
        .execution_options(synchronize_session=False)
    )
    return session.scalars(statement).one_or_none()


def _transition_statement(state: LegState, keys: tuple[str, ...]) -> Update:
    timestamp = STATE_TIMESTAMP.get(state)
    values: dict[str, Any] = {
        "state": state,
        "updated_at": bindparam("p_at", type_=_legs.c.updated_at.type),
    }
    if timestamp is not None:
        # First occurrence wins: a retransmitted 180 does not move first_provisional_at.
        values[timestamp] = func.coalesce(
            _legs.c[timestamp], bindparam("p_at", type_=_legs.c[timestamp].type)
        )
    for key in keys:
        values[key] = bindparam(f"p_{key}", type_=_legs.c[key].type)
    return (
        update(_legs)
        .where(
            _legs.c.id == bindparam("p_leg_id", type_=_legs.c.id.type),
            # Inlined (our own enum values): expanding IN parameters cannot go to executemany.
            _legs.c.state.in_(
                [
                    literal_column(f"'{allowed.value}'")
                    for allowed in sorted(ALLOWED_PREDECESSORS[state])
                ]
            ),
        )
        .values(values)
    )


def _transition_params(transition: Transition) -> dict[str, Any]:
    params = {f"p_{key}": value for key, value in transition.fields.items()}
    params["p_leg_id"] = transition.leg_id
    params["p_at"] = transition.at
    return params


def apply_transitions(session: Session, transitions: Sequence[Transition]) -> int:
    """Apply transitions in order per leg, batched; return how many moved a leg.

    A transition whose leg is not in an allowed predecessor state (late, repeated, or after
    the end) changes nothing. Round k holds every leg's k-th transition, so each leg's own
    order is kept while legs are written together, one executemany per (state, fields) shape.
    """
    rounds: list[list[Transition]] = []
    depth: dict[uuid.UUID, int] = defaultdict(int)
    for transition in transitions:
        position = depth[transition.leg_id]
        depth[transition.leg_id] += 1
        if position == len(rounds):
            rounds.append([])
        rounds[position].append(transition)
    connection = session.connection()
    applied = 0
    for batch in rounds:
        shapes: dict[tuple[LegState, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
        for transition in batch:
            shape = (transition.state, tuple(sorted(transition.fields)))
            shapes[shape].append(_transition_params(transition))
        for (state, keys), params in shapes.items():
            result = connection.execute(
                _transition_statement(state, keys), params, execution_options=_ROWCOUNT
            )
            applied += _count(result.rowcount)
    return applied


def legs_owned_by(session: Session, worker: str, states: Iterable[LegState]) -> list[Leg]:
    statement = (
        select(Leg)
        .where(Leg.owner_worker == worker, Leg.state.in_(sorted(LegState(s) for s in states)))
        .order_by(Leg.created_at)
    )
    return list(session.scalars(statement))


def adopt_legs(
    session: Session, from_worker: str, to_worker: str, states: Iterable[LegState], at: datetime
) -> list[Leg]:
    """Hand a dead worker's legs to a live one in one UPDATE, so two rescuers never both act."""
    statement = (
        update(Leg)
        .where(
            Leg.owner_worker == from_worker,
            Leg.state.in_(sorted(LegState(s) for s in states)),
        )
        .values(owner_worker=to_worker, updated_at=at)
        .returning(Leg)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(statement))


# --- CDRs -------------------------------------------------------------------------------------


def insert_cdrs(session: Session, pending: Sequence[PendingCdr]) -> int:
    """Insert CDRs (ON CONFLICT (call_id) DO NOTHING); return how many were new.

    A CDR without a leg_id is linked to the leg whose dialog had its Call-ID, if any.
    """
    if not pending:
        return 0
    unknown = sorted({item.record.call_id for item in pending if item.leg_id is None})
    leg_ids: dict[str, uuid.UUID] = {}
    if unknown:
        found = session.execute(
            select(_legs.c.call_id, _legs.c.id).where(_legs.c.call_id.in_(unknown))
        )
        leg_ids = {call_id: leg_id for call_id, leg_id in found}
    rows = [
        cdr_row(
            item.record,
            worker=item.worker,
            leg_id=item.leg_id or leg_ids.get(item.record.call_id),
        )
        for item in pending
    ]
    # executemany (psycopg pipelines it) rather than one multi-VALUES INSERT … RETURNING:
    # measured 4x faster, since the driver converts one short statement instead of a huge one.
    statement = _insert(session, _cdrs).on_conflict_do_nothing(index_elements=[_cdrs.c.call_id])
    return _count(
        session.connection().execute(statement, rows, execution_options=_ROWCOUNT).rowcount
    )


# --- outbox -----------------------------------------------------------------------------------


def insert_outbox_events(session: Session, events: Sequence[PendingOutboxEvent]) -> int:
    if not events:
        return 0
    rows = [
        {"trunk": event.trunk, "event_id": event.event_id, "payload": dict(event.payload)}
        for event in events
    ]
    statement = _insert(session, _outbox).on_conflict_do_nothing(
        index_elements=[_outbox.c.event_id]
    )
    return _count(
        session.connection().execute(statement, rows, execution_options=_ROWCOUNT).rowcount
    )


def fetch_unpublished(session: Session, limit: int, trunk: str | None = None) -> list[OutboxEvent]:
    statement = select(OutboxEvent).where(OutboxEvent.published_at.is_(None))
    if trunk is not None:
        statement = statement.where(OutboxEvent.trunk == trunk)
    return list(session.scalars(statement.order_by(OutboxEvent.id).limit(limit)))


def mark_published(session: Session, ids: Sequence[int], at: datetime) -> int:
    if not ids:
        return 0
    statement = (
        update(_outbox)
        .where(_outbox.c.id.in_(list(ids)), _outbox.c.published_at.is_(None))
        .values(published_at=at)
    )
    return _count(session.connection().execute(statement).rowcount)


def purge_published(session: Session, before: datetime) -> int:
    statement = _outbox.delete().where(_outbox.c.published_at < before)
    return _count(session.connection().execute(statement).rowcount)
