"""Leg and CDR writes and reads the workers need, as functions of an open Session or Connection.

The Repository runs them in one transaction each (`Repository.run` / `run_connection`); the
recorder runs the batch ones (transitions, CDRs, outbox rows) together in `persist_batch`.
The batch writes and the dial task's claim also take a plain Core `Connection`: the worker's
hot path runs statements built once at import, with no ORM objects in between. Transitions
live in models.transition_ops, the outbox in models.outbox_ops, crash recovery's queries in
models.recovery_ops; the names below are re-exported for callers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.bulk_insert import insert_ignoring, insert_rows, insert_rows_pg
from models.cdrs import Cdr, cdr_row
from models.dial_fields import DialFields
from models.enums import TERMINAL_STATES, LegState
from models.executor import Executor, as_uuid, connection_of
from models.legs import Leg
from models.transition_ops import TRANSITION_FIELDS, Transition, apply_transitions
from sipstack.cdr import CdrRecord
from sipstack.outcome import Outcome

__all__ = [
    "TRANSITION_FIELDS",
    "ClaimedLeg",
    "Executor",
    "PendingCdr",
    "Transition",
    "apply_transitions",
    "as_uuid",
    "cdr_for_leg",
    "claim_for_dial",
    "claim_leg",
    "connection_of",
    "find_leg",
    "get_leg",
    "insert_cdrs",
    "insert_ignoring",
    "insert_leg",
    "insert_legs",
    "insert_rows",
    "insert_rows_pg",
    "leg_states",
]

_legs: Table = Leg.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class PendingCdr:
    """A CDR to store, with what the worker adds to the core's record: the typed outcome,
    which attempt of its correlation id the leg was, the targets it tried, and the trunk
    the call was handed to next (None: this leg was the correlation id's last attempt)."""

    record: CdrRecord
    worker: str
    leg_id: uuid.UUID | None = None
    outcome: Outcome | None = None
    attempt: int = 1
    routed_via: str | None = None
    next_trunk: str | None = None


def _insert(session: Executor, target: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL and SQLite spell it alike)."""
    dialect = connection_of(session).dialect.name
    if dialect == "postgresql":
        return postgresql.insert(target)
    if dialect == "sqlite":
        return sqlite.insert(target)
    raise ValueError(f"unsupported database dialect {dialect!r} (PostgreSQL or SQLite)")


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
        # no conflict target: the live-correlation_id index and the primary key (a message's
        # leg id is derived from its correlation_id, workers.contract.dial_message)
        .on_conflict_do_nothing()
        .returning(Leg)
    )
    for _ in range(3):
        inserted = session.scalars(statement).one_or_none()
        if inserted is not None:
            return inserted, True
        same = session.get(Leg, leg_id)
        if same is not None:
            return same, True
        live = session.scalars(
            select(Leg).where(Leg.correlation_id == fields.correlation_id, _not_terminal())
        ).one_or_none()
        if live is not None:
            return live, live.id == leg_id
        # The live leg ended between our INSERT and SELECT: the key is free again.
    raise RuntimeError(f"correlation_id {fields.correlation_id!r} keeps changing; giving up")


def insert_legs(session: Session, dials: Sequence[DialFields]) -> list[tuple[Leg, bool]]:
    """Store several validated dials in one transaction (see insert_leg)."""
    return [insert_leg(session, fields, uuid.uuid4()) for fields in dials]


def get_leg(session: Session, leg_id: uuid.UUID | str) -> Leg | None:
    return session.get(Leg, as_uuid(leg_id))


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


@dataclass(frozen=True, slots=True)
class ClaimedLeg:
    """What the dial task needs of a leg it just claimed (no ORM object on the hot path)."""

    leg_id: uuid.UUID
    correlation_id: str
    scenario: str
    request_uri: str
    caller_user: str
    request: Mapping[str, Any]


_CLAIM_FOR_DIAL = (
    update(_legs)
    .where(
        _legs.c.id.in_(bindparam("p_leg_ids", expanding=True)),
        or_(
            _legs.c.state == literal_column(f"'{LegState.QUEUED.value}'"),
            and_(
                _legs.c.state == literal_column(f"'{LegState.CLAIMED.value}'"),
                _legs.c.claim_token == bindparam("p_token", type_=_legs.c.claim_token.type),
            ),
        ),
    )
    .values(
        state=literal_column(f"'{LegState.CLAIMED.value}'"),
        owner_worker=bindparam("p_worker", type_=_legs.c.owner_worker.type),
        claim_token=bindparam("p_token", type_=_legs.c.claim_token.type),
        claimed_at=bindparam("p_at", type_=_legs.c.claimed_at.type),
        updated_at=bindparam("p_at", type_=_legs.c.updated_at.type),
    )
    .returning(
        _legs.c.id, _legs.c.correlation_id, _legs.c.scenario, _legs.c.request_uri,
        _legs.c.caller_user, _legs.c.request,
    )
)

_LEG_STATES = select(_legs.c.id, _legs.c.state, _legs.c.owner_worker).where(
    _legs.c.id.in_(bindparam("p_leg_ids", expanding=True))
)


def claim_for_dial(
    executor: Executor,
    *,
    worker: str,
    token: uuid.UUID,
    at: datetime,
    leg_ids: Sequence[uuid.UUID],
) -> list[ClaimedLeg]:
    """`claim_leg` by id for dial messages, several legs in one pre-built UPDATE … RETURNING
    of the columns a dial needs. Same rules: only a queued leg (or one claimed with this same
    token: a retry after a lost commit answer) is won; the legs won come back."""
    if not leg_ids:
        return []
    rows = connection_of(executor).execute(
        _CLAIM_FOR_DIAL,
        {"p_leg_ids": list(leg_ids), "p_token": token, "p_worker": worker, "p_at": at},
    )
    return [
        ClaimedLeg(leg, correlation_id, str(scenario.value), request_uri, caller_user or "",
                   request)
        for leg, correlation_id, scenario, request_uri, caller_user, request in rows
    ]


def leg_states(
    executor: Executor, leg_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[LegState, str | None]]:
    """State and owner of each leg that exists (asked only about legs whose claim lost)."""
    if not leg_ids:
        return {}
    rows = connection_of(executor).execute(_LEG_STATES, {"p_leg_ids": list(leg_ids)})
    return {leg: (state, owner) for leg, state, owner in rows}


def find_leg(
    session: Session, *, correlation_id: str | None = None, call_id: str | None = None
) -> Leg | None:
    """The live leg with this key, else its most recent finished one."""
    if (correlation_id is None) == (call_id is None):
        raise ValueError("give exactly one of correlation_id or call_id")
    key = Leg.correlation_id == correlation_id if correlation_id is not None else (
        Leg.call_id == call_id
    )
    live = session.scalars(
        select(Leg).where(key, _not_terminal()).limit(1)
    ).first()
    if live is not None:
        return live
    return session.scalars(select(Leg).where(key).order_by(Leg.created_at.desc()).limit(1)).first()


# --- CDRs -------------------------------------------------------------------------------------


def insert_cdrs(session: Executor, pending: Sequence[PendingCdr]) -> int:
    """Insert CDRs (ON CONFLICT (call_id) DO NOTHING); return how many were new.

    A CDR without a leg_id is linked to the leg whose dialog had its Call-ID, if any.
    """
    if not pending:
        return 0
    unknown = sorted({item.record.call_id for item in pending if item.leg_id is None})
    leg_ids: dict[str, uuid.UUID] = {}
    connection = connection_of(session)
    if unknown:
        found = connection.execute(
            select(_legs.c.call_id, _legs.c.id).where(_legs.c.call_id.in_(unknown))
        )
        leg_ids = {call_id: leg_id for call_id, leg_id in found}
    rows = [
        cdr_row(
            item.record,
            worker=item.worker,
            leg_id=item.leg_id or leg_ids.get(item.record.call_id),
            outcome=item.outcome, attempt=item.attempt, routed_via=item.routed_via,
            next_trunk=item.next_trunk,
        )
        for item in pending
    ]
    # executemany (psycopg pipelines it) rather than one multi-VALUES INSERT … RETURNING:
    # measured 4x faster, since the driver converts one short statement instead of a huge one.
    return insert_rows(connection, "cdrs", rows)


def cdr_for_leg(session: Session, leg_id: uuid.UUID | str) -> Cdr | None:
    """The leg's CDR (the latest, should there be several)."""
    return session.scalars(
        select(Cdr).where(Cdr.leg_id == as_uuid(leg_id)).order_by(Cdr.id.desc())
    ).first()
