"""CdrWriter and the retry policy on the real PostgreSQL, including a server stop and start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, OperationalError

from migrations import runner
from models.cdrs import Cdr
from models.db import make_engine
from models.enums import LegState
from models.legs import Leg
from models.outbox import OutboxEvent
from models.repository import Repository
from models.transient import is_transient, retry_policy
from models.writer import CdrWriter, WriterBufferFull
from sipstack.cdr import CdrRecord

T0 = 1_700_000_000.0
FAST_RETRY = retry_policy(attempts=3, initial=0.01, maximum=0.1)


def rows(repo: Repository, model: type[Cdr] | type[Leg] | type[OutboxEvent]) -> int:
    with repo.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def writer(repository: Repository) -> Iterator[CdrWriter]:
    fast = Repository(repository.engine, retry=FAST_RETRY)
    started = CdrWriter(fast, worker="w1", batch_size=200, linger=0.02, outage_pause=0.1).start()
    yield started
    started.stop(timeout=5)


def new_leg(repo: Repository, name: str) -> Leg:
    leg, _ = repo.create_leg({"correlation_id": name, "trunk": "t1", "request_uri": "sip:a@b"})
    claimed = repo.claim_leg(worker="w1", leg_id=leg.id, at=T0)
    assert claimed is not None
    return claimed


def test_writer_batches_cdrs(
    writer: CdrWriter, repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    for index in range(2000):
        writer.submit_cdr(make_cdr(f"batch-{index}"))
    writer.submit_cdr(make_cdr("batch-7"))  # a repeat is not a second row
    assert writer.flush(timeout=30)
    assert rows(repository, Cdr) == 2000
    assert writer.stats.cdrs_written == 2000
    assert writer.stats.cdrs_submitted == 2001
    assert writer.stats.batches <= 2001 // 20  # batched, not row by row
    assert writer.pending == 0


def test_writer_writes_transitions_cdrs_and_events_in_order(
    writer: CdrWriter, repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    legs = [new_leg(repository, f"order-{index}") for index in range(20)]
    for offset, leg in enumerate(legs):
        call_id = f"call-{offset}@h"
        writer.submit_transition(leg.id, "inviting", T0 + offset, call_id=call_id, local_cseq=1)
        writer.submit_outbox_event("t1", f"{leg.id}:1", {"state": "invited"})
        writer.submit_transition(leg.id, "ringing", T0 + offset + 0.5, last_status_code=180)
        writer.submit_transition(leg.id, "established", T0 + offset + 1, remote_tag="rt")
        writer.submit_transition(leg.id, "ended", T0 + offset + 9)
        writer.submit_cdr(make_cdr(call_id, correlation_id=leg.correlation_id))
    assert writer.flush(timeout=30)
    assert writer.stats.transitions_applied == 80
    assert rows(repository, OutboxEvent) == 20
    with repository.session() as session:
        stored = list(session.scalars(select(Leg)))
        cdrs = list(session.scalars(select(Cdr)))
    assert {leg.state for leg in stored} == {LegState.ENDED}
    assert all(leg.first_provisional_at is not None for leg in stored)
    assert {cdr.leg_id for cdr in cdrs} == {leg.id for leg in legs}


def test_a_refused_item_does_not_take_its_batch_down(
    writer: CdrWriter, repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    for index in range(50):
        writer.submit_cdr(make_cdr(f"ok-{index}"))
    writer.submit_cdr(make_cdr("bad", final_status_code=999))  # violates the CHECK
    for index in range(50, 100):
        writer.submit_cdr(make_cdr(f"ok-{index}"))
    assert writer.flush(timeout=30)
    assert rows(repository, Cdr) == 100
    assert writer.stats.rejected == 1
    assert writer.healthy


def test_transition_errors_surface_in_the_caller(writer: CdrWriter) -> None:
    with pytest.raises(ValueError, match="unknown leg fields"):
        writer.submit_transition("00000000-0000-0000-0000-000000000001", "ended", T0, bogus=1)
    assert writer.pending == 0


def test_the_buffer_is_bounded_and_keeps_room_for_cdrs(
    repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    leg = new_leg(repository, "bounded")
    idle = CdrWriter(repository, worker="w1", max_pending=10)  # thread not started yet
    for index in range(8):
        idle.submit_transition(leg.id, "inviting", T0 + index)
    with pytest.raises(WriterBufferFull, match="8 items pending"):
        idle.submit_transition(leg.id, "ringing", T0)
    idle.submit_cdr(make_cdr("room-1"))
    idle.submit_cdr(make_cdr("room-2"))
    with pytest.raises(WriterBufferFull):
        idle.submit_cdr(make_cdr("room-3"))
    idle.start()
    assert idle.stop(timeout=10)
    assert rows(repository, Cdr) == 2
    assert idle.stats.transitions_applied == 8


def _terminate_other_backends(engine: Engine, database: str) -> int:
    with engine.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        ).scalar_one()
    return int(killed)


def test_a_lost_connection_is_retried(
    migrated_database_url: URL, make_cdr: Callable[..., CdrRecord]
) -> None:
    # No pre-ping: the pooled connection is used dead, so the first attempt really fails.
    engine = make_engine(migrated_database_url, pool_pre_ping=False, pool_size=1, max_overflow=0)
    admin = make_engine(migrated_database_url, pool_size=1)
    try:
        without_retry = Repository(engine, retry=retry_policy(attempts=1))
        with_retry = Repository(engine, retry=FAST_RETRY)
        without_retry.fetch_unpublished()  # one live connection in the pool
        assert _terminate_other_backends(admin, str(migrated_database_url.database)) >= 1
        with pytest.raises(OperationalError) as lost:
            without_retry.write_cdr(make_cdr("lost-1"), "w1")
        assert is_transient(lost.value)

        with_retry.fetch_unpublished()
        assert _terminate_other_backends(admin, str(migrated_database_url.database)) >= 1
        assert with_retry.write_cdr(make_cdr("lost-2"), "w1")
        with with_retry.session() as session:
            written = session.scalars(
                select(Cdr.call_id).where(Cdr.call_id.in_(["lost-1", "lost-2"]))
            ).all()
        assert written == ["lost-2"]
    finally:
        engine.dispose()
        admin.dispose()


def test_integrity_errors_are_not_retried(
    repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    attempts: list[int] = []
    counting = Repository(
        repository.engine,
        retry=retry_policy(attempts=5, before=lambda state: attempts.append(1)),
    )
    with pytest.raises(IntegrityError) as refused:
        counting.write_cdr(make_cdr("bad", final_status_code=42), "w1")
    assert not is_transient(refused.value)
    assert len(attempts) == 1


# --- a real outage ----------------------------------------------------------------------------


def _cluster() -> tuple[str, str]:
    versions = sorted(path.name for path in Path("/etc/postgresql").iterdir())
    return versions[-1], "main"


def _pg_ctl(action: str) -> None:
    version, name = _cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action, "-m", "fast"]
        if action == "stop"
        else ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _server_ready() -> bool:
    return (
        subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False, timeout=10
        ).returncode
        == 0
    )


@pytest.fixture
def postgresql_comes_back() -> Iterator[None]:
    """Whatever the test does to the server, it is running again when the test ends."""
    yield
    if not _server_ready():
        _pg_ctl("start")
    wait_until(_server_ready, 60, "PostgreSQL to accept connections")


@pytest.mark.services
def test_nothing_is_lost_when_postgresql_stops_and_starts(
    writer: CdrWriter,
    repository: Repository,
    make_cdr: Callable[..., CdrRecord],
    postgresql_comes_back: None,
) -> None:
    legs = [new_leg(repository, f"outage-{index}") for index in range(30)]
    for index, leg in enumerate(legs[:10]):
        writer.submit_transition(leg.id, "inviting", T0, call_id=f"before-{index}")
    for index in range(300):
        writer.submit_cdr(make_cdr(f"before-{index}"))
    assert writer.flush(timeout=30)

    _pg_ctl("stop")
    assert not _server_ready()
    for index, leg in enumerate(legs[10:]):
        writer.submit_transition(leg.id, "inviting", T0, call_id=f"during-{index}")
        writer.submit_transition(leg.id, "ended", T0 + 1)
    for index in range(500):
        writer.submit_cdr(make_cdr(f"during-{index}"))
    wait_until(lambda: not writer.healthy, 30, "the writer to notice the outage")
    assert not writer.flush(timeout=0.5)
    assert writer.pending > 0
    for index in range(200):
        writer.submit_cdr(make_cdr(f"late-{index}"))

    _pg_ctl("start")
    wait_until(_server_ready, 60, "PostgreSQL to accept connections")
    assert writer.flush(timeout=60)
    assert writer.healthy
    assert writer.stats.outages == 1
    assert rows(repository, Cdr) == 1000
    assert writer.stats.rejected == 0
    ended = repository.legs_owned_by("w1", ["ended"])
    assert len(ended) == 20
    assert {leg.call_id for leg in ended} == {f"during-{index}" for index in range(20)}


def test_a_schema_error_keeps_the_items_until_it_is_fixed(
    empty_database_url: URL, make_cdr: Callable[..., CdrRecord]
) -> None:
    """Before `outbound migrate` there is no cdrs table: nothing is dropped meanwhile."""
    engine = make_engine(empty_database_url)
    writer = CdrWriter(Repository(engine, retry=FAST_RETRY), worker="w1", outage_pause=0.1)
    try:
        writer.start()
        writer.submit_cdr(make_cdr("early-1"))
        writer.submit_cdr(make_cdr("early-2"))
        wait_until(lambda: not writer.healthy, 30, "the writer to report the failing database")
        assert writer.pending == 2
        assert writer.stats.rejected == 0

        runner.upgrade(empty_database_url)
        assert writer.flush(timeout=30)
        assert writer.healthy
        assert rows(writer.repository, Cdr) == 2
    finally:
        writer.stop(timeout=5)
        engine.dispose()
