"""The worker's persistence path on the real PostgreSQL: LegRecorder running persist_batch
(batches, refused rows, a lost connection, an outage with PostgreSQL stopped and started, a
database not migrated yet) and the retry policy under it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, OperationalError

from migrations import runner
from models.cdrs import Cdr
from models.db import make_engine
from models.enums import LegState
from models.legs import Leg
from models.operations import PendingCdr, Transition
from models.outbox import OutboxEvent
from models.repository import Repository
from models.transient import is_transient, retry_policy
from sipstack.cdr import CdrRecord
from tests.persisting import fetch_unpublished, legs_owned_by, write_cdr
from tests.waiting import wait_until
from workers.config.settings import Settings
from workers.events.entries import StreamEvent
from workers.events.outbox import PostgresOutbox
from workers.events.publisher import EventPublisher, StreamWriter
from workers.runtime.book import LegContext, PendingEvent
from workers.runtime.recorder import LegRecorder

T0 = 1_700_000_000.0
FAST_RETRY = retry_policy(attempts=3, initial=0.01, maximum=0.1)


def rows(repo: Repository, model: type[Cdr] | type[Leg] | type[OutboxEvent]) -> int:
    with repo.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def start_recorder(repository: Repository) -> LegRecorder:
    """A recorder wired as the worker wires it (deferred outbox marks, stream publisher), on
    an in-process Redis: these tests are about PostgreSQL."""
    outbox = PostgresOutbox(repository, trunk="t1", workers=["w1"], defer_marks=True)
    settings = Settings(key_prefix=f"rec-{uuid.uuid4().hex[:8]}")
    publisher = EventPublisher(StreamWriter(fakeredis.FakeRedis(), settings), outbox)
    return LegRecorder(
        repository, publisher, worker="w1", outbox=outbox, batch_size=200, linger=0.02,
        outage_pause=0.1, backlog_retry=0.1,
    ).start()


@pytest.fixture
def recorder(repository: Repository) -> Iterator[LegRecorder]:
    started = start_recorder(Repository(repository.engine, retry=FAST_RETRY))
    yield started
    started.stop(timeout=5)


class Legs:
    """Events of legs as the LegBook makes them (seq per leg)."""

    def __init__(self) -> None:
        self._contexts: dict[str, LegContext] = {}

    def context(self, leg_id: uuid.UUID | str) -> LegContext:
        key = str(leg_id)
        if key not in self._contexts:
            self._contexts[key] = LegContext(
                leg_id=key, trunk="t1", correlation_id=f"corr-{key}", scenario="campaign"
            )
        return self._contexts[key]

    def event(
        self,
        leg_id: uuid.UUID | str,
        state: str,
        at: float,
        *,
        transition: bool = True,
        cdr: CdrRecord | None = None,
        **fields: object,
    ) -> PendingEvent:
        moved = Transition.make(leg_id, state, at, **fields) if transition else None
        context = self.context(leg_id)
        stream_event = StreamEvent(
            trunk="t1", leg_id=context.leg_id, seq=context.next_seq(),
            state="invited" if state == "inviting" else state,
            call_id=str(fields.get("call_id", "")), correlation_id=context.correlation_id,
            scenario="campaign", at=at,
        )
        pending_cdr = PendingCdr(cdr, "w1", None) if cdr is not None else None
        return PendingEvent(context, stream_event, moved, pending_cdr)

    def cdr_only(self, record: CdrRecord) -> PendingEvent:
        return self.event(uuid.uuid4(), "ended", record.ended_at or T0, transition=False,
                          cdr=record)


def new_leg(repo: Repository, name: str) -> Leg:
    leg, _ = repo.create_leg({"correlation_id": name, "trunk": "t1", "request_uri": "sip:a@b"})
    claimed = repo.claim_leg(worker="w1", leg_id=leg.id, at=T0)
    assert claimed is not None
    return claimed


def test_recorder_batches_cdrs(
    recorder: LegRecorder, repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    legs = Legs()
    for index in range(2000):
        recorder.submit(legs.cdr_only(make_cdr(f"batch-{index}")))
    recorder.submit(legs.cdr_only(make_cdr("batch-7")))  # a repeat is not a second row
    assert recorder.flush(timeout=30)
    assert rows(repository, Cdr) == 2000
    assert recorder.stats.cdrs == 2001  # submitted; the repeat wrote nothing
    assert recorder.stats.batches <= 2001 // 20  # batched, not row by row
    assert recorder.backlog == 0


def test_recorder_writes_transitions_cdrs_and_events_in_order(
    recorder: LegRecorder, repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    legs = [new_leg(repository, f"order-{index}") for index in range(20)]
    book = Legs()
    for offset, leg in enumerate(legs):
        call_id = f"call-{offset}@h"
        record = make_cdr(call_id, correlation_id=leg.correlation_id)
        for pending in (
            book.event(leg.id, "inviting", T0 + offset, call_id=call_id, local_cseq=1),
            book.event(leg.id, "ringing", T0 + offset + 0.5, last_status_code=180),
            book.event(leg.id, "established", T0 + offset + 1, remote_tag="rt"),
            book.event(leg.id, "ended", T0 + offset + 9, cdr=record),
        ):
            recorder.submit(pending)
    assert recorder.flush(timeout=30)
    assert recorder.stats.events == 80
    assert rows(repository, OutboxEvent) == 80
    with repository.session() as session:
        stored = list(session.scalars(select(Leg)))
        cdrs = list(session.scalars(select(Cdr)))
    assert {leg.state for leg in stored} == {LegState.ENDED}
    assert all(leg.first_provisional_at is not None for leg in stored)
    assert {cdr.leg_id for cdr in cdrs} == {leg.id for leg in legs}


def test_a_refused_item_does_not_take_its_batch_down(
    recorder: LegRecorder, repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    legs = Legs()
    for index in range(50):
        recorder.submit(legs.cdr_only(make_cdr(f"ok-{index}")))
    recorder.submit(legs.cdr_only(make_cdr("bad", final_status_code=999)))  # violates the CHECK
    for index in range(50, 100):
        recorder.submit(legs.cdr_only(make_cdr(f"ok-{index}")))
    assert recorder.flush(timeout=30)
    assert rows(repository, Cdr) == 100
    assert recorder.stats.rejected == 1
    assert recorder.database_healthy


def test_transition_errors_surface_in_the_caller(recorder: LegRecorder) -> None:
    with pytest.raises(ValueError, match="unknown leg fields"):
        Legs().event("00000000-0000-0000-0000-000000000001", "ended", T0, bogus=1)
    assert recorder.backlog == 0


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
        fetch_unpublished(without_retry)  # one live connection in the pool
        assert _terminate_other_backends(admin, str(migrated_database_url.database)) >= 1
        with pytest.raises(OperationalError) as lost:
            write_cdr(without_retry, make_cdr("lost-1"), "w1")
        assert is_transient(lost.value)

        fetch_unpublished(with_retry)
        assert _terminate_other_backends(admin, str(migrated_database_url.database)) >= 1
        assert write_cdr(with_retry, make_cdr("lost-2"), "w1")
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
        write_cdr(counting, make_cdr("bad", final_status_code=42), "w1")
    assert not is_transient(refused.value)
    assert len(attempts) == 1


def test_a_schema_error_keeps_the_items_until_it_is_fixed(
    empty_database_url: URL, make_cdr: Callable[..., CdrRecord]
) -> None:
    """Before `outbound migrate` there is no cdrs table: nothing is dropped meanwhile."""
    engine = make_engine(empty_database_url)
    repository = Repository(engine, retry=FAST_RETRY)
    recorder = start_recorder(repository)
    legs = Legs()
    try:
        recorder.submit(legs.cdr_only(make_cdr("early-1")))
        recorder.submit(legs.cdr_only(make_cdr("early-2")))
        wait_until(lambda: not recorder.database_healthy, 30,
                   "the recorder to report the failing database")
        assert recorder.backlog == 2
        assert recorder.stats.rejected == 0

        runner.upgrade(empty_database_url)
        assert recorder.flush(timeout=30)
        assert recorder.database_healthy
        assert rows(repository, Cdr) == 2
    finally:
        recorder.stop(timeout=5)
        engine.dispose()


# --- a real outage (stops the shared PostgreSQL: run it alone, on purpose) --------------------


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


def test_nothing_is_lost_when_postgresql_stops_and_starts(
    recorder: LegRecorder,
    repository: Repository,
    make_cdr: Callable[..., CdrRecord],
    postgresql_comes_back: None,
) -> None:
    legs = [new_leg(repository, f"outage-{index}") for index in range(30)]
    book = Legs()
    for index, leg in enumerate(legs[:10]):
        recorder.submit(book.event(leg.id, "inviting", T0, call_id=f"before-{index}"))
    for index in range(300):
        recorder.submit(book.cdr_only(make_cdr(f"before-{index}")))
    assert recorder.flush(timeout=30)

    _pg_ctl("stop")
    assert not _server_ready()
    for index, leg in enumerate(legs[10:]):
        recorder.submit(book.event(leg.id, "inviting", T0, call_id=f"during-{index}"))
        recorder.submit(book.event(leg.id, "ended", T0 + 1))
    for index in range(500):
        recorder.submit(book.cdr_only(make_cdr(f"during-{index}")))
    wait_until(lambda: not recorder.database_healthy, 30, "the recorder to notice the outage")
    assert not recorder.flush(timeout=0.5)
    assert recorder.backlog > 0
    for index in range(200):
        recorder.submit(book.cdr_only(make_cdr(f"late-{index}")))

    _pg_ctl("start")
    wait_until(_server_ready, 60, "PostgreSQL to accept connections")
    assert recorder.flush(timeout=60)
    assert recorder.database_healthy
    assert recorder.stats.outages == 1
    assert rows(repository, Cdr) == 1000
    assert recorder.stats.rejected == 0
    ended = legs_owned_by(repository, "w1", ["ended"])
    assert len(ended) == 20
    assert {leg.call_id for leg in ended} == {f"during-{index}" for index in range(20)}
