"""Leg transitions: forward-only state moves with dialog fields, batched (the recorder's
hot path: PostgreSQL takes a batch as arrays, SQLite as executemany)."""

from __future__ import annotations

import functools
import json
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, Update, bindparam, func, literal_column, update

from models.enums import ALLOWED_PREDECESSORS, STATE_TIMESTAMP, LegState
from models.executor import ROWCOUNT, Executor, as_uuid, connection_of, count
from models.legs import Leg
from models.times import to_datetime
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

    @classmethod
    def ended(
        cls,
        leg_id: uuid.UUID | str,
        at: float | datetime,
        *,
        failed: bool = False,
        status_code: int | None = None,
        reason: str | None = None,
    ) -> Transition:
        """A live leg's end ('failed' when `failed`), with the last status it saw, if any."""
        fields: dict[str, Any] = {}
        if status_code is not None:
            fields["last_status_code"] = status_code
        if reason is not None:
            fields["last_reason"] = reason
        return cls.make(leg_id, LegState.FAILED if failed else LegState.ENDED, at, **fields)


@functools.cache
def _transition_statement(state: LegState, keys: tuple[str, ...]) -> Update:
    # Built once per (state, fields) shape: a statement object reused keeps its cache key.
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


def apply_transitions(session: Executor, transitions: Sequence[Transition]) -> int:
    """Apply transitions in order per leg, batched; return how many moved a leg.

    A transition whose leg is not in an allowed predecessor state (late, repeated, or after
    the end) changes nothing. Round k holds every leg's k-th transition, so each leg's own
    order is kept while legs are written together, one executemany per (state, fields) shape.
    PostgreSQL takes the batch as arrays instead (`_apply_transitions_pg`), same results.
    """
    connection = connection_of(session)
    if connection.dialect.name == "postgresql":
        return _apply_transitions_pg(connection, transitions)
    rounds: list[list[Transition]] = []
    depth: dict[uuid.UUID, int] = defaultdict(int)
    for transition in transitions:
        position = depth[transition.leg_id]
        depth[transition.leg_id] += 1
        if position == len(rounds):
            rounds.append([])
        rounds[position].append(transition)
    applied = 0
    for batch in rounds:
        shapes: dict[tuple[LegState, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
        for transition in batch:
            shape = (transition.state, tuple(sorted(transition.fields)))
            shapes[shape].append(_transition_params(transition))
        for (state, keys), params in shapes.items():
            result = connection.execute(
                _transition_statement(state, keys), params, execution_options=ROWCOUNT
            )
            applied += count(result.rowcount)
    return applied


# --- PostgreSQL: a batch as arrays, one statement per table ----------------------------------
#
# Per-row executemany costs a few tens of microseconds of Python per row in SQLAlchemy and
# psycopg; the worker writes about a dozen rows per call. On PostgreSQL the recorder's batch
# goes as one array per column (binary parameters: no text escaping of every element) and
# `unnest` turns them back into rows on the server, so the client's work per row is appending
# to a list. SQLite keeps the executemany path above.

_TRANSITION_FIELD_TYPES = {
    "call_id": "text", "local_tag": "text", "remote_tag": "text", "local_cseq": "integer",
    "invite_branch": "text", "remote_target": "text", "route_set": "jsonb",
    "transport": "text", "peer_addr": "text", "last_status_code": "integer",
    "last_reason": "text",
}
_TRANSITION_FIELD_ORDER = tuple(sorted(_TRANSITION_FIELD_TYPES))
assert set(_TRANSITION_FIELD_ORDER) == TRANSITION_FIELDS


def _pg_literal_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in sorted(values))  # our own enum values only


_TIMESTAMP_COLUMNS = tuple(sorted({
    column for state, column in STATE_TIMESTAMP.items() if state in ALLOWED_PREDECESSORS
}))


def _transition_round_sql() -> str:
    sets = ["state = v.state", "updated_at = v.at"]
    # First occurrence wins: a retransmitted 180 does not move first_provisional_at.
    sets += [f"{column} = COALESCE(l.{column}, v.{column})" for column in _TIMESTAMP_COLUMNS]
    for bit, name in enumerate(_TRANSITION_FIELD_ORDER):
        sets.append(f"{name} = CASE WHEN v.mask & {1 << bit} <> 0 THEN v.{name} ELSE l.{name} END")
    allowed = " ".join(
        f"WHEN '{state.value}' THEN ARRAY[{_pg_literal_list(before)}]"
        for state, before in sorted(ALLOWED_PREDECESSORS.items())
    )
    typed = [
        ("id", "uuid"), ("first_state", "text"), ("state", "text"), ("at", "timestamptz"),
        *((column, "timestamptz") for column in _TIMESTAMP_COLUMNS), ("mask", "integer"),
        *((name, _TRANSITION_FIELD_TYPES[name]) for name in _TRANSITION_FIELD_ORDER),
    ]
    arrays = ", ".join(f"%({name})b::{kind}[]" for name, kind in typed)
    return (
        f"UPDATE legs AS l SET {', '.join(sets)} "
        f"FROM unnest({arrays}) AS v({', '.join(name for name, _ in typed)}) "
        f"WHERE l.id = v.id AND l.state = ANY(CASE v.first_state {allowed} END) "
        "RETURNING l.id"
    )


_TRANSITION_ROUND_SQL = _transition_round_sql()
_ROUND_COLUMNS = ("id", "first_state", "state", "at", *_TIMESTAMP_COLUMNS, "mask",
                  *_TRANSITION_FIELD_ORDER)


def _pg_field_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "route_set":
        return json.dumps(list(value))
    if name == "transport":
        return str(Transport.parse(str(value)).value)
    return value


def _apply_transitions_pg(connection: Connection, transitions: Sequence[Transition]) -> int:
    """Apply transitions with one UPDATE … FROM unnest(…) per round.

    A leg's consecutive transitions that each follow from the one before (inviting, ringing,
    established, ended) are one chain, written as one row version: the chain applies when
    the leg's state allows its first step, exactly as the steps one by one would. When the
    first step does not apply, the rest go again, one round later, from the unchanged state.
    """
    queues: dict[uuid.UUID, deque[Transition]] = {}
    for transition in transitions:
        queues.setdefault(transition.leg_id, deque()).append(transition)
    applied = 0
    while queues:
        chains = [_take_chain(queue) for queue in queues.values()]
        moved = _apply_chains_pg(connection, chains)
        for chain in chains:
            if chain[0].leg_id in moved:
                applied += len(chain)
            else:
                queues[chain[0].leg_id].extendleft(reversed(chain[1:]))
        queues = {leg: queue for leg, queue in queues.items() if queue}
    return applied


def _take_chain(queue: deque[Transition]) -> list[Transition]:
    chain = [queue.popleft()]
    while queue and chain[-1].state in ALLOWED_PREDECESSORS[queue[0].state]:
        chain.append(queue.popleft())
    return chain


def _apply_chains_pg(connection: Connection, chains: Sequence[list[Transition]]) -> set[Any]:
    """One UPDATE for one chain per leg; the ids of the legs it moved."""
    columns: dict[str, list[Any]] = {name: [] for name in _ROUND_COLUMNS}
    for chain in chains:
        first, last = chain[0], chain[-1]
        columns["id"].append(first.leg_id)
        columns["first_state"].append(first.state.value)
        columns["state"].append(last.state.value)
        columns["at"].append(last.at)
        firsts: dict[str, datetime] = {}
        fields: dict[str, Any] = {}
        for step in chain:
            column = STATE_TIMESTAMP.get(step.state)
            if column is not None:
                firsts.setdefault(column, step.at)
            fields.update(step.fields)
        for column in _TIMESTAMP_COLUMNS:
            columns[column].append(firsts.get(column))
        mask = 0
        for bit, name in enumerate(_TRANSITION_FIELD_ORDER):
            if name in fields:
                mask |= 1 << bit
                columns[name].append(_pg_field_value(name, fields[name]))
            else:
                columns[name].append(None)
        columns["mask"].append(mask)
    result = connection.exec_driver_sql(_TRANSITION_ROUND_SQL, columns)
    return {row[0] for row in result}
