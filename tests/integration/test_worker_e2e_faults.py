"""End to end under faults: Redis and PostgreSQL restart mid-run; no CDR and no event is lost.

Both servers here are private to the test (free ports): restarting the shared ones would break
other tests running at the same time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migrations import runner
from tests.db_fixtures import temporary_database
from tests.sipp.harness import requires_sipp
from tests.worker_stack import (
    TERMINAL,
    EventCollector,
    Stack,
    assert_complete_event_history,
    events_by_leg,
)
from tests.workers_harness import PostgresCluster, RedisServer, wait_for

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]


@pytest.fixture
def database_url() -> Iterator[str]:
    with temporary_database("outbound_faults") as url:
        runner.upgrade(url)
        yield url.render_as_string(hide_password=False)


def _terminal_legs(collector: EventCollector) -> set[str]:
    return {event.leg_id for event in collector.snapshot() if event.state in TERMINAL}


def test_redis_restart_loses_no_event_no_cdr_and_no_queued_dial(
    tmp_path: Path, database_url: str
) -> None:
    stack = Stack(tmp_path, database_url)
    collector: EventCollector | None = None
    try:
        carrier = stack.sipp("uas_answer_remote_bye.xml", 13, hold_ms=4000, reason_cause="16")
        stack.configure_trunk(carrier)
        collector = EventCollector(stack)
        stack.start_worker("w1@redis")
        up = [q.leg_id for q in stack.enqueue(10)]
        stack.wait_states(up, {"established"}, timeout=30)
        wait_for(lambda: {e.leg_id for e in collector.snapshot() if e.state == "established"}
                 >= set(up), 10, "the collector to see every established event")
        # legs whose dial messages were in the broker when it lost its data
        lost = [str(stack.repository.create_leg({
            "correlation_id": f"lost-{i}", "trunk": stack.trunk,
            "request_uri": f"sip:+1666{i}@{stack.proxy}"})[0].id) for i in range(3)]

        stack.redis_server.stop()
        # the far end hangs up while Redis is away: ends and CDRs are stored, events wait
        stack.wait_states(up, {"ended"}, timeout=30)
        assert stack.rows("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")[0][0]
        stack.redis_server.start()  # empty, like a restarted Redis without persistence

        everything = up + lost
        stack.wait_cdrs(everything, timeout=60)
        wait_for(lambda: _terminal_legs(collector) >= set(everything), 30,
                 "terminal events of every leg on the stream")
        assert_complete_event_history(events_by_leg(collector.snapshot()), everything)
        # the recorder marks published rows in its next transaction, or once it is idle
        wait_for(lambda: stack.rows(
            "SELECT count(*) FROM outbox_events WHERE published_at IS NULL")[0][0] == 0,
            5, "every published outbox row to be marked")
        assert carrier.wait(timeout=30).successful_calls == 13
    finally:
        if collector is not None:
            collector.close()
        stack.close()


def test_broker_redis_with_aof_restart_loses_no_accepted_dial(
    tmp_path: Path, database_url: str
) -> None:
    """A Redis broker with an append-only file: queued and prefetched dials survive its
    restart (no re-publishing needed); one CDR per correlation_id."""
    redis_server = RedisServer(appendonly=True).start()
    stack = Stack(tmp_path, database_url, redis_server=redis_server, cps=8)
    try:
        calls = 30
        carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=300, reason_cause="16")
        stack.configure_trunk(carrier)
        queued = stack.enqueue(calls)
        leg_ids = [q.leg_id for q in queued]
        stack.start_worker("w1@aof")
        wait_for(lambda: len(stack.cdrs()) >= 5, 60, "a few calls done")
        redis_server.stop(graceful=True)  # SIGTERM: the AOF is complete (appendfsync always)
        redis_server.start()
        stack.wait_cdrs(leg_ids, timeout=120)
        rows = stack.rows("SELECT correlation_id FROM cdrs")
        assert sorted(row[0] for row in rows) == sorted(q.correlation_id for q in queued)
        assert_complete_event_history(stack.settled_events(leg_ids), leg_ids)
    finally:
        stack.close()
        redis_server.close()


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


def test_postgres_restart_loses_no_cdr_and_no_event(
    tmp_path: Path, private_postgres: PostgresCluster
) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(private_postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE outbound"))
    admin.dispose()
    url = private_postgres.url("outbound")
    runner.upgrade(url)
    stack = Stack(tmp_path, url)
    try:
        carrier = stack.sipp("uas_answer_remote_bye.xml", 13, hold_ms=3000, reason_cause="16")
        stack.configure_trunk(carrier)
        stack.start_worker("w1@pg")
        up = [q.leg_id for q in stack.enqueue(10)]
        late = [str(stack.repository.create_leg({
            "correlation_id": f"late-{i}", "trunk": stack.trunk,
            "request_uri": f"sip:+1777{i}@{stack.proxy}"})[0].id) for i in range(3)]
        stack.wait_states(up, {"established"}, timeout=30)
        stack.repository.engine.dispose()

        private_postgres.stop("fast")
        assert stack.client is not None
        for leg_id in late:  # dials that arrive while the database is down wait and retry
            stack.client.publish_dial(leg_id, stack.trunk, "")
        # the far end hangs up every answered call while PostgreSQL is down
        wait_for(lambda: stack.sipps[0].result().successful_calls >= 10, 30,
                 "the carrier to finish the answered calls")
        private_postgres.start()

        everything = up + late
        stack.wait_cdrs(everything, timeout=90)
        assert_complete_event_history(stack.settled_events(everything), everything)
        assert carrier.wait(timeout=30).successful_calls == 13
    finally:
        stack.close()
