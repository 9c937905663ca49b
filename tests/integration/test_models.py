"""Model-level rules: naming convention, text enums, timestamps, state table, time parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime, Text
from sqlalchemy.dialects import postgresql

from models.base import TextEnum
from models.enums import (
    ALLOWED_PREDECESSORS,
    TERMINAL_STATES,
    LegState,
    leg_state_for_event,
)
from models.schema import metadata
from models.times import parse_when, to_datetime
from sipstack.cdr import Disposition
from sipstack.events import LIFECYCLE_STATES


def test_every_timestamp_is_timestamptz() -> None:
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, DateTime):
                assert column.type.timezone, f"{table.name}.{column.name}"


def test_enumerations_are_text_with_a_named_check() -> None:
    for table in metadata.sorted_tables:
        checks = {
            constraint.name
            for constraint in table.constraints
            if constraint.__class__.__name__ == "CheckConstraint"
        }
        for column in table.columns:
            if isinstance(column.type, TextEnum):
                assert isinstance(column.type.impl_instance, Text)
                assert f"ck_{table.name}_{column.name}" in checks


def test_text_enum_binds_values_and_refuses_unknown_ones() -> None:
    kind = TextEnum(Disposition)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    assert kind.process_bind_param(Disposition.NO_ANSWER, dialect) == "no_answer"
    assert kind.process_bind_param("busy", dialect) == "busy"
    assert kind.process_result_value("busy", dialect) is Disposition.BUSY
    with pytest.raises(ValueError, match="BUSY"):
        kind.process_bind_param("BUSY", dialect)


def test_terminal_states_accept_no_further_transition() -> None:
    for state, predecessors in ALLOWED_PREDECESSORS.items():
        assert not predecessors & TERMINAL_STATES, state
        assert LegState.QUEUED not in predecessors or state in TERMINAL_STATES


def test_every_lifecycle_event_maps_to_a_leg_state() -> None:
    for event_state in LIFECYCLE_STATES:
        assert leg_state_for_event(event_state) in LegState
    assert leg_state_for_event("provisional", has_sdp=True) is LegState.EARLY
    assert leg_state_for_event("cancelled") is LegState.ENDED
    with pytest.raises(ValueError, match="unknown lifecycle"):
        leg_state_for_event("exploded")


def test_times_are_utc() -> None:
    assert to_datetime(0.0) == datetime(1970, 1, 1, tzinfo=UTC)
    paris = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert to_datetime(paris) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert to_datetime(paris).tzinfo is UTC
    assert to_datetime(datetime(2024, 5, 1)) == datetime(2024, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T10:30Z", datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
        ("2024-05-01T12:30+02:00", datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
        ("now", datetime(2024, 6, 1, tzinfo=UTC)),
        ("90m", datetime(2024, 5, 31, 22, 30, tzinfo=UTC)),
        ("7d", datetime(2024, 5, 25, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, now=datetime(2024, 6, 1, tzinfo=UTC)) == expected


def test_parse_when_names_the_bad_input() -> None:
    with pytest.raises(ValueError, match="'last tuesday'"):
        parse_when("last tuesday")
