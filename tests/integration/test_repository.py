"""The sync repository on the real PostgreSQL: legs, claims, transitions, CDRs, outbox."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from models import operations, recovery_ops
from models.cdrs import Cdr
from models.dial_fields import InvalidDialRequest, validate_dial_fields
from models.enums import LegState
from models.legs import Leg
from models.repository import Repository
from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.dial import Scenario
from sipstack.transport import Transport
from tests.persisting import (
    add_outbox_event,
    fetch_unpublished,
    legs_owned_by,
    mark_leg_ended,
    record_transition,
    record_transitions,
    write_cdr,
)
from workers.events.stream import mark_published

T0 = 1_700_000_000.0


def dial_fields(correlation_id: str = "order-1", **overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "correlation_id": correlation_id,
        "trunk": "carrier-a",
        "request_uri": "sip:+15550002@carrier.test",
        "caller_user": "+15550001",
        "scenario": "callback",
    }
    fields.update(overrides)
    return fields


def count(repo: Repository, model: type[Leg] | type[Cdr]) -> int:
    with repo.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def started_leg(repo: Repository, correlation_id: str = "order-1") -> Leg:
    leg, _ = repo.create_leg(dial_fields(correlation_id))
    claimed = repo.claim_leg(worker="w1", leg_id=leg.id, at=T0)
    assert claimed is not None
    return claimed


# --- creating legs ----------------------------------------------------------------------------


def test_create_leg_stores_a_queued_leg(repository: Repository) -> None:
    leg, created = repository.create_leg(dial_fields(ring_timeout=30, codecs=["pcmu"]))
    assert created
    stored = repository.get_leg(leg.id)
    assert stored is not None
    assert stored.state is LegState.QUEUED
    assert stored.scenario is Scenario.CALLBACK
    assert stored.trunk == "carrier-a"
    assert stored.request_uri == "sip:+15550002@carrier.test"
    assert stored.owner_worker is None
    assert stored.created_at.tzinfo is not None
    rebuilt = validate_dial_fields(stored.request)
    assert rebuilt.ring_timeout == 30.0
    assert rebuilt.codecs == ("PCMU",)
    assert rebuilt.to_dial_request().target.request_uri == "sip:+15550002@carrier.test"


def test_duplicate_correlation_id_returns_the_existing_leg(repository: Repository) -> None:
    first, created_first = repository.create_leg(dial_fields("order-7"))
    second, created_second = repository.create_leg(dial_fields("order-7", caller_user="other"))
    assert created_first and not created_second
    assert second.id == first.id
    assert second.caller_user == "+15550001"
    assert count(repository, Leg) == 1


def test_correlation_id_is_free_again_once_the_leg_ended(repository: Repository) -> None:
    leg = started_leg(repository, "order-8")
    assert mark_leg_ended(repository, leg.id, T0 + 5)
    again, created = repository.create_leg(dial_fields("order-8"))
    assert created
    assert again.id != leg.id
    assert count(repository, Leg) == 2


def test_bad_request_is_rejected_before_anything_is_stored(repository: Repository) -> None:
    with pytest.raises(InvalidDialRequest) as caught:
        repository.create_leg(dial_fields(trunk=""))
    assert caught.value.field == "trunk"
    with pytest.raises(InvalidDialRequest, match="request_uri"):
        repository.create_leg(dial_fields(request_uri="http://example.com"))
    with pytest.raises(InvalidDialRequest, match=r"request_uri: .*port 99999 out of range"):
        repository.create_leg(dial_fields(request_uri="sip:bob@host:99999"))
    with pytest.raises(InvalidDialRequest, match=r"signaling_addr: .*port 70000 out of range"):
        repository.create_leg(dial_fields(signaling_addr="proxy.test:70000"))
    assert count(repository, Leg) == 0


def test_concurrent_duplicate_requests_make_one_leg(repository: Repository) -> None:
    results: list[tuple[uuid.UUID, bool]] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        leg, created = repository.create_leg(dial_fields("order-race"))
        results.append((leg.id, created))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 6
    assert len({leg_id for leg_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert count(repository, Leg) == 1


def test_insert_retried_after_a_lost_commit_still_reports_created(
    repository: Repository,
) -> None:
    """A retry with the same leg id (the commit answer was lost) is still 'created'."""
    fields = validate_dial_fields(dial_fields("order-lost"))
    leg_id = uuid.uuid4()
    first = repository.run(operations.insert_leg, fields, leg_id)
    retry = repository.run(operations.insert_leg, fields, leg_id)
    other = repository.run(operations.insert_leg, fields, uuid.uuid4())
    assert first[1] and retry[1] and not other[1]
    assert first[0].id == retry[0].id == other[0].id == leg_id


# --- claiming ---------------------------------------------------------------------------------


def test_claim_moves_a_queued_leg_to_the_worker(repository: Repository) -> None:
    leg, _ = repository.create_leg(dial_fields())
    claimed = repository.claim_leg(worker="worker-a", leg_id=str(leg.id), at=T0)
    assert claimed is not None
    assert claimed.state is LegState.CLAIMED
    assert claimed.owner_worker == "worker-a"
    assert claimed.claimed_at == datetime.fromtimestamp(T0, UTC)
    assert repository.claim_leg(worker="worker-b", leg_id=leg.id) is None
    stored = repository.get_leg(leg.id)
    assert stored is not None and stored.owner_worker == "worker-a"


def test_claim_by_correlation_id(repository: Repository) -> None:
    leg, _ = repository.create_leg(dial_fields("order-9"))
    claimed = repository.claim_leg(worker="worker-a", correlation_id="order-9")
    assert claimed is not None and claimed.id == leg.id
    assert repository.claim_leg(worker="worker-a", correlation_id="order-9") is None
    assert repository.claim_leg(worker="worker-a", correlation_id="no-such") is None


def test_claim_needs_exactly_one_key(repository: Repository) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        repository.claim_leg(worker="w")


def test_only_one_of_many_concurrent_claims_wins(repository: Repository) -> None:
    leg, _ = repository.create_leg(dial_fields())
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def claim(worker: str) -> None:
        barrier.wait()
        if repository.claim_leg(worker=worker, leg_id=leg.id) is not None:
            winners.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1
    stored = repository.get_leg(leg.id)
    assert stored is not None and stored.owner_worker == winners[0]


def test_a_claim_repeated_with_its_token_gets_the_leg_again(repository: Repository) -> None:
    """The retry of a claim whose commit answer was lost must not lose the leg."""
    leg, _ = repository.create_leg(dial_fields())
    token = uuid.uuid4()
    at = datetime.fromtimestamp(T0, UTC)
    first = repository.run(operations.claim_leg, worker="w1", token=token, at=at, leg_id=leg.id)
    again = repository.run(operations.claim_leg, worker="w1", token=token, at=at, leg_id=leg.id)
    other = repository.run(
        operations.claim_leg, worker="w1", token=uuid.uuid4(), at=at, leg_id=leg.id
    )
    assert first is not None and again is not None and other is None


# --- transitions ------------------------------------------------------------------------------


def test_transitions_store_timestamps_and_dialog_state(repository: Repository) -> None:
    leg = started_leg(repository)
    assert record_transition(repository,
        leg.id,
        "inviting",
        T0 + 0.1,
        call_id="abc@10.0.0.1",
        local_tag="lt1",
        local_cseq=1,
        invite_branch="z9hG4bKx",
        transport="TCP",
        peer_addr="10.0.0.2:5060",
    )
    assert record_transition(repository, leg.id, LegState.RINGING, T0 + 0.4, last_status_code=180)
    assert record_transition(repository, leg.id, LegState.EARLY, T0 + 0.9, last_status_code=183)
    assert record_transition(repository,
        leg.id,
        LegState.ESTABLISHED,
        T0 + 3,
        remote_tag="rt9",
        remote_target="sip:uas@10.0.0.2:5070;transport=tcp",
        route_set=["<sip:p1.test;lr>", "<sip:p2.test;lr>"],
        last_status_code=200,
    )
    assert record_transition(repository, leg.id, LegState.TERMINATING, T0 + 30, local_cseq=2)
    stored = repository.get_leg(leg.id)
    assert stored is not None
    assert stored.state is LegState.TERMINATING
    assert stored.invited_at == datetime.fromtimestamp(T0 + 0.1, UTC)
    assert stored.first_provisional_at == datetime.fromtimestamp(T0 + 0.4, UTC)
    assert stored.answered_at == datetime.fromtimestamp(T0 + 3, UTC)
    assert stored.ended_at is None
    assert stored.updated_at == datetime.fromtimestamp(T0 + 30, UTC)
    assert (stored.call_id, stored.local_tag, stored.remote_tag) == ("abc@10.0.0.1", "lt1", "rt9")
    assert stored.local_cseq == 2
    assert stored.invite_branch == "z9hG4bKx"
    assert stored.transport is Transport.TCP
    assert stored.route_set == ["<sip:p1.test;lr>", "<sip:p2.test;lr>"]
    assert stored.remote_target == "sip:uas@10.0.0.2:5070;transport=tcp"
    assert stored.last_status_code == 200


def test_transitions_never_move_a_leg_backwards(repository: Repository) -> None:
    leg = started_leg(repository)
    assert not record_transition(repository, leg.id, "ringing", T0)  # not invited yet
    assert record_transition(repository, leg.id, "inviting", T0)
    assert record_transition(repository, leg.id, "established", T0 + 2)
    assert not record_transition(repository, leg.id, "ringing", T0 + 3)
    assert mark_leg_ended(repository, leg.id, T0 + 9, status_code=200, reason="BYE")
    assert not record_transition(repository, leg.id, "established", T0 + 10)
    assert not mark_leg_ended(repository, leg.id, T0 + 11, failed=True)
    stored = repository.get_leg(leg.id)
    assert stored is not None
    assert stored.state is LegState.ENDED
    assert stored.ended_at == datetime.fromtimestamp(T0 + 9, UTC)
    assert stored.last_reason == "BYE"


def test_transition_arguments_are_checked(repository: Repository) -> None:
    leg = started_leg(repository)
    with pytest.raises(ValueError, match="claim_leg"):
        record_transition(repository, leg.id, "claimed", T0)
    with pytest.raises(ValueError, match="unknown leg fields"):
        record_transition(repository, leg.id, "inviting", T0, callid="x")
    with pytest.raises(ValueError):
        record_transition(repository, leg.id, "dancing", T0)


def test_batched_transitions_keep_each_legs_order(repository: Repository) -> None:
    legs = [started_leg(repository, f"batch-{index}") for index in range(3)]
    batch = []
    for offset, leg in enumerate(legs):
        batch += [
            operations.Transition.make(leg.id, "inviting", T0 + offset, call_id=f"c{offset}"),
            operations.Transition.make(leg.id, "ringing", T0 + offset + 1),
            operations.Transition.make(leg.id, "established", T0 + offset + 2),
        ]
    batch.append(operations.Transition.make(legs[0].id, "ended", T0 + 50))
    assert record_transitions(repository, batch) == 10
    states = [repository.get_leg(leg.id).state for leg in legs]  # type: ignore[union-attr]
    assert states == [LegState.ENDED, LegState.ESTABLISHED, LegState.ESTABLISHED]
    second = repository.get_leg(legs[1].id)
    assert second is not None and second.call_id == "c1"
    assert second.first_provisional_at == datetime.fromtimestamp(T0 + 2, UTC)


def test_live_owners_and_adoption(repository: Repository) -> None:
    """Crash recovery's queries (models.recovery_ops), the ones the worker runs."""
    mine = started_leg(repository, "own-1")
    record_transition(repository, mine.id, "inviting", T0)
    ended = started_leg(repository, "own-2")
    mark_leg_ended(repository, ended.id, T0)
    repository.create_leg(dial_fields("own-3"))  # queued, nobody's
    owned = legs_owned_by(repository, "w1")
    assert [leg.id for leg in owned] == [mine.id]
    assert legs_owned_by(repository, "w1", ["ended"])[0].id == ended.id
    assert repository.run(recovery_ops.live_owners, mine.trunk, "someone-else") == ["w1"]

    adopted = repository.run(recovery_ops.adopt, "w1", "w2")
    assert [item.leg.id for item in adopted] == [mine.id]
    assert adopted[0].leg.owner_worker == "w2"
    assert repository.run(recovery_ops.adopt, "w1", "w3") == []  # a second rescuer gets nothing
    assert legs_owned_by(repository, "w1") == []


# --- CDRs -------------------------------------------------------------------------------------


def test_write_cdr_writes_once_with_every_field(
    repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    leg = started_leg(repository)
    record_transition(repository, leg.id, "inviting", T0, call_id="cdr-1@host")
    record = make_cdr(
        "cdr-1@host",
        correlation_id="order-1",
        hangup_by=HangupBy.LOCAL,
        hangup_reason=HangupReason.TIMER_EXPIRED,
        reason_protocol="Q.850",
        reason_cause=102,
        reason_text="Recovery on timer expiry",
        srtp=True,
    )
    assert write_cdr(repository, record, "w1")
    assert not write_cdr(repository, record, "w2")
    changed = make_cdr("cdr-1@host", disposition=Disposition.FAILED, answered_at=None)
    assert not write_cdr(repository, changed, "w3")  # written once, never updated
    with repository.session() as session:
        rows = list(session.scalars(select(Cdr)))
    assert len(rows) == 1
    row = rows[0]
    assert row.leg_id == leg.id
    assert row.worker == "w1"
    assert row.duration_ms == record.duration_ms == 33_500
    assert row.billsec == record.billsec == 31
    assert row.started_at == datetime.fromtimestamp(record.started_at, UTC)
    assert row.answered_at == datetime.fromtimestamp(1_700_000_003.0, UTC)
    assert row.disposition is Disposition.ANSWERED
    assert row.hangup_reason is HangupReason.TIMER_EXPIRED
    assert row.hangup_by is HangupBy.LOCAL
    assert (row.reason_protocol, row.reason_cause) == ("Q.850", 102)
    assert row.srtp is True and row.codec == "PCMA"


def test_cdr_of_an_unanswered_call(
    repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    record = make_cdr(
        answered_at=None,
        final_status_code=486,
        disposition=Disposition.BUSY,
        ended_at=1_700_000_004.0,
        codec=None,
    )
    assert write_cdr(repository, record, "w1")
    with repository.session() as session:
        row = session.scalars(select(Cdr)).one()
    assert row.billsec == 0
    assert row.answered_at is None
    assert row.leg_id is None  # no leg had this Call-ID
    assert row.final_status_code == 486


def test_the_database_refuses_values_outside_the_enumerations(repository: Repository) -> None:
    with repository.engine.connect() as connection, pytest.raises(IntegrityError, match="ck_"):
        connection.execute(
            text(
                "INSERT INTO cdrs (call_id, correlation_id, scenario, trunk, from_uri, to_uri,"
                " started_at, ended_at, duration_ms, billsec, disposition, hangup_reason,"
                " hangup_by, worker) VALUES ('x', 'c', 'campaign', 't', 'f', 't', now(), now(),"
                " 0, 0, 'ANSWERED', 'normal', 'local', 'w')"
            )
        )


# --- outbox -----------------------------------------------------------------------------------


def test_outbox_add_fetch_and_purge_what_the_publisher_marked(repository: Repository) -> None:
    assert add_outbox_event(repository, "carrier-a", "leg1:1", {"state": "invited"})
    assert not add_outbox_event(repository, "carrier-a", "leg1:1", {"state": "invited"})
    assert add_outbox_event(repository, "carrier-b", "leg2:1", {"state": "invited"})
    assert add_outbox_event(repository, "carrier-a", "leg1:2", {"state": "ended", "n": [1, 2]})

    pending = fetch_unpublished(repository, limit=10)
    assert [event.event_id for event in pending] == ["leg1:1", "leg2:1", "leg1:2"]
    assert pending[2].payload == {"state": "ended", "n": [1, 2]}
    only_a = fetch_unpublished(repository, limit=1, trunk="carrier-a")
    assert [event.event_id for event in only_a] == ["leg1:1"]

    # The workers' publisher marks what reached the stream; the repository purges it later.
    assert repository.run(mark_published, ["leg1:1", "leg2:1"]) == 2
    assert [event.event_id for event in fetch_unpublished(repository)] == ["leg1:2"]
    assert repository.purge_published(time.time() + 60) == 2
    assert [event.event_id for event in fetch_unpublished(repository)] == ["leg1:2"]
