"""The worker's two batch-write paths agree: PostgreSQL (arrays + unnest, one statement per
round) and the per-row executemany kept for SQLite leave the same legs, CDRs and outbox rows."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from models import operations
from models.enums import ALLOWED_PREDECESSORS, LegState
from models.legs import Leg
from models.repository import Repository
from sipstack.cdr import CdrRecord
from tests.persisting import fetch_unpublished, mark_leg_ended, record_transitions, write_cdrs
from workers.events.stream import StreamEvent, insert_outbox

T0 = 1_700_000_000.0
LEGS = 3
_example = itertools.count()

optional_text = st.none() | st.text(alphabet="abc;<>:@\"'\\ é", min_size=0, max_size=6)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "call_id": optional_text,
    "local_tag": optional_text,
    "remote_tag": optional_text,
    "local_cseq": st.none() | st.integers(min_value=1, max_value=2**31 - 1),
    "invite_branch": optional_text,
    "remote_target": optional_text,
    "route_set": st.none() | st.lists(st.text(alphabet="<sip:p;lr>\"", max_size=8), max_size=3),
    "transport": st.none() | st.sampled_from(["udp", "TCP", "tls"]),
    "peer_addr": optional_text,
    "last_status_code": st.none() | st.integers(min_value=100, max_value=699),
    "last_reason": optional_text,
}
fields_strategy = st.fixed_dictionaries(
    {}, optional={name: values for name, values in FIELD_VALUES.items()}
)
step = st.tuples(
    st.integers(min_value=0, max_value=LEGS - 1),
    st.sampled_from(sorted(ALLOWED_PREDECESSORS)),
    fields_strategy,
)


def _claimed_legs(repository: Repository, tag: str) -> list[uuid.UUID]:
    legs = []
    for index in range(LEGS):
        leg, _ = repository.create_leg(
            {"correlation_id": f"{tag}-{index}", "trunk": "t", "request_uri": "sip:a@b"}
        )
        assert repository.claim_leg(worker="w", leg_id=leg.id, at=T0) is not None
        legs.append(leg.id)
    return legs


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(leg: Leg | None) -> dict[str, Any]:
    assert leg is not None
    row = {name: getattr(leg, name) for name in operations.TRANSITION_FIELDS}
    row["state"] = leg.state
    for column in ("invited_at", "first_provisional_at", "answered_at", "ended_at",
                   "updated_at"):
        row[column] = _as_utc(getattr(leg, column))
    return row


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=12))
@example(steps=[  # repeats: set-once times keep the first value, later fields overwrite
    (0, LegState.INVITING, {"call_id": "a"}), (0, LegState.INVITING, {"call_id": None}),
    (0, LegState.RINGING, {}), (0, LegState.EARLY, {"route_set": ["<sip:p;lr>"]}),
    (1, LegState.FAILED, {"last_reason": "x"}), (1, LegState.ENDED, {}),
    # a chain whose first step does not apply (claimed -> ringing) while the next one does
    (2, LegState.RINGING, {"last_status_code": 180}), (2, LegState.FAILED, {"last_reason": "y"}),
])
def test_transition_batches_agree_on_postgresql_and_sqlite(
    repository: Repository, sqlite_repository: Repository,
    steps: list[tuple[int, LegState, dict[str, Any]]],
) -> None:
    tag = f"ex{next(_example)}"
    results = []
    for repo in (repository, sqlite_repository):
        legs = _claimed_legs(repo, tag)
        batch = [
            operations.Transition.make(legs[index], state, T0 + position + 1, **fields)
            for position, (index, state, fields) in enumerate(steps)
        ]
        applied = record_transitions(repo, batch)
        rows = [_row(repo.get_leg(leg)) for leg in legs]
        for leg in legs:  # frees the correlation ids for the next example
            mark_leg_ended(repo, leg, T0 + 100)
        results.append((applied, rows))
    assert results[0] == results[1]


def test_cdr_and_outbox_batches_agree_on_postgresql_and_sqlite(
    repository: Repository, sqlite_repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    leg = uuid.uuid4()
    records = [
        make_cdr("one@h", reason_text='he said "bye"\\', error=None),
        make_cdr("two@h", answered_at=None, codec=None, srtp=True),
        make_cdr("one@h"),  # the same call again in the batch: written once
    ]
    events = [
        StreamEvent(trunk="t", leg_id=str(leg), seq=seq, state=state, call_id="one@h",
                    correlation_id="c", scenario="campaign", status_code=code,
                    reason='"quoted" \\ reason', at=T0 + seq)
        for seq, state, code in ((1, "invited", None), (2, "provisional", 180),
                                 (1, "invited", None))
    ]
    extras = [{"dialog": {"route_set": ["<sip:p;lr>"], "n": 1}}, None, None]
    stored: list[tuple[Any, ...]] = []
    for repo in (repository, sqlite_repository):
        pending = [operations.PendingCdr(record, "w", leg) for record in records]
        written = write_cdrs(repo, pending)
        assert write_cdrs(repo, pending) == 0  # written before: nothing new
        keys = repo.run_connection(insert_outbox, events, "w", extras)
        with repo.engine.connect() as connection:
            cdr_rows = connection.execute(text(
                "SELECT call_id, reason_text, answered_at IS NULL, codec, srtp, disposition,"
                " hangup_by, duration_ms FROM cdrs ORDER BY call_id")).all()
            outbox_rows = connection.execute(text(
                "SELECT event_id, trunk FROM outbox_events ORDER BY id")).all()
        payloads = [item.payload for item in fetch_unpublished(repo, limit=10)]
        stored.append((written, keys, [tuple(row) for row in cdr_rows],
                       [tuple(row) for row in outbox_rows], payloads))
    assert stored[0] == stored[1]
    written, keys, cdrs, outbox, payloads = stored[0]
    assert written == 2 and [row[0] for row in cdrs] == ["one@h", "two@h"]
    assert keys == [f"{leg}:1", f"{leg}:2", f"{leg}:1"]
    assert outbox == [(f"{leg}:1", "t"), (f"{leg}:2", "t")]  # in batch order, repeat dropped
    assert payloads[0]["dialog"] == {"route_set": ["<sip:p;lr>"], "n": 1}
    assert payloads[1]["reason"] == '"quoted" \\ reason'
