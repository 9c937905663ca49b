"""The same repository on SQLite (the demo's embedded fallback): schema from create_all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from models import operations
from models.dial_fields import InvalidDialRequest
from models.enums import LegState
from models.repository import Repository
from sipstack.cdr import CdrRecord
from tests.persisting import (
    add_outbox_event,
    fetch_unpublished,
    mark_leg_ended,
    record_transition,
    write_cdr,
)
from workers.contract.dial_message import message_leg_id, parse_dial_message

T0 = 1_700_000_000.0


def test_sqlite_repository_covers_the_worker_path(
    sqlite_repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    repo = sqlite_repository
    fields = {"correlation_id": "demo-1", "trunk": "demo", "request_uri": "sip:bob@127.0.0.1"}
    leg, created = repo.create_leg(fields)
    again, created_again = repo.create_leg(fields)
    assert created and not created_again and again.id == leg.id
    with pytest.raises(InvalidDialRequest):
        repo.create_leg({**fields, "correlation_id": ""})

    assert repo.claim_leg(worker="w", leg_id=leg.id, at=T0) is not None
    assert repo.claim_leg(worker="x", leg_id=leg.id, at=T0) is None
    assert record_transition(repo, leg.id, "inviting", T0, call_id="s1@h", route_set=["<sip:p>"])
    assert record_transition(repo, leg.id, "ringing", T0 + 1)
    assert not record_transition(repo, leg.id, "inviting", T0 + 2)
    assert mark_leg_ended(repo, leg.id, T0 + 3, failed=True, status_code=486)
    stored = repo.get_leg(leg.id)
    assert stored is not None
    assert stored.state is LegState.FAILED
    assert stored.route_set == ["<sip:p>"]
    assert stored.last_status_code == 486

    # The correlation_id is free again once the leg ended (partial unique index on SQLite too).
    assert repo.create_leg(fields)[1]

    assert write_cdr(repo, make_cdr("s1@h"), "w")
    assert not write_cdr(repo, make_cdr("s1@h"), "w")
    assert add_outbox_event(repo, "demo", "e:1", {"a": 1})
    assert not add_outbox_event(repo, "demo", "e:1", {"a": 1})
    assert [event.payload for event in fetch_unpublished(repo)] == [{"a": 1}]


def test_sqlite_stores_a_batch_of_dial_messages_once(sqlite_repository: Repository) -> None:
    messages = [parse_dial_message({"version": 1, "correlation_id": cid, "trunk": "demo",
                                    "to": "sip:bob@127.0.0.1"}) for cid in ("a", "b", "a")]
    stored = [(message_leg_id(m.trunk, m.correlation_id), m) for m in messages]
    first = sqlite_repository.run_connection(operations.store_dial_legs, stored)
    again = sqlite_repository.run_connection(operations.store_dial_legs, stored)
    assert [leg.correlation_id for leg in first] == ["a", "b"] == [
        leg.correlation_id for leg in again]
    assert [leg.leg_id for leg in first] == [leg.leg_id for leg in again]
    assert all(leg.state is LegState.QUEUED for leg in again)
