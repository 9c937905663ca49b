"""Any sequence of transitions leaves a leg where the state table says, with set-once times."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.enums import ALLOWED_PREDECESSORS, STATE_TIMESTAMP, LegState
from models.repository import Repository
from tests.persisting import mark_leg_ended, record_transition

T0 = 1_700_000_000.0
TARGETS = sorted(ALLOWED_PREDECESSORS)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=8))
def test_transitions_follow_the_state_table(repository: Repository, steps: list[LegState]) -> None:
    leg, _ = repository.create_leg(
        {"correlation_id": f"prop-{id(steps)}-{len(steps)}", "trunk": "t", "request_uri": "sip:a@b"}
    )
    assert repository.claim_leg(worker="w", leg_id=leg.id, at=T0) is not None
    state = LegState.CLAIMED
    first_seen: dict[str, float] = {}
    for index, target in enumerate(steps):
        at = T0 + index + 1
        expected = state in ALLOWED_PREDECESSORS[target]
        assert record_transition(repository, leg.id, target, at) == expected, (state, target)
        if expected:
            state = target
            column = STATE_TIMESTAMP.get(target)
            if column is not None:
                first_seen.setdefault(column, at)
    stored = repository.get_leg(leg.id)
    assert stored is not None
    assert stored.state is state
    for column in ("invited_at", "first_provisional_at", "answered_at", "ended_at"):
        value = getattr(stored, column)
        if column in first_seen:
            assert value == datetime.fromtimestamp(first_seen[column], UTC), column
        else:
            assert value is None, column
    mark_leg_ended(repository, leg.id, T0 + 100)  # frees the correlation_id for the next example
