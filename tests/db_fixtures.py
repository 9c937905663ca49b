"""Fixtures giving each test module its own PostgreSQL database (random name, dropped after).

Wire into tests/conftest.py with `from tests.db_fixtures import *` (or pytest_plugins).
The server is OUTBOUND_TEST_DATABASE_URL, else OUTBOUND_DATABASE_URL, else the local default.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.engine import URL

from migrations import runner
from models.db import database_url, make_engine
from models.repository import Repository
from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason

__all__ = [
    "cdr_record",
    "db_engine",
    "empty_database_url",
    "make_cdr",
    "migrated_database_url",
    "repository",
    "sqlite_repository",
    "temporary_database",
]


def cdr_record(call_id: str | None = None, **overrides: object) -> CdrRecord:
    """A plausible answered CDR; override any field."""
    values: dict[str, object] = {
        "call_id": call_id or f"{uuid.uuid4().hex}@127.0.0.1",
        "correlation_id": f"corr-{uuid.uuid4().hex[:8]}",
        "scenario": "campaign",
        "trunk": "carrier-a",
        "from_uri": "sip:+15550001@outbound.test",
        "to_uri": "sip:+15550002@carrier.test",
        "started_at": 1_700_000_000.0,
        "first_provisional_at": 1_700_000_000.25,
        "answered_at": 1_700_000_003.0,
        "ended_at": 1_700_000_033.5,
        "final_status_code": 200,
        "disposition": Disposition.ANSWERED,
        "hangup_reason": HangupReason.NORMAL,
        "hangup_by": HangupBy.REMOTE,
        "codec": "PCMA",
    }
    values.update(overrides)
    return CdrRecord(**values)  # type: ignore[arg-type]


def server_url() -> URL:
    return database_url(os.environ.get("OUTBOUND_TEST_DATABASE_URL"))


def _admin_engine(base: URL) -> Engine:
    return create_engine(
        base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool
    )


@contextmanager
def temporary_database(prefix: str = "outbound_test") -> Iterator[URL]:
    """Create an empty database with a random name; drop it (even with open sessions) after."""
    base = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(base)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_cdr() -> Callable[..., CdrRecord]:
    """The `cdr_record` factory, as a fixture (no import of this module needed)."""
    return cdr_record


@pytest.fixture
def empty_database_url() -> Iterator[URL]:
    """A new, empty database for one test."""
    with temporary_database() as url:
        yield url


@pytest.fixture(scope="module")
def migrated_database_url() -> Iterator[URL]:
    """A database for one test module, upgraded to the head migration."""
    with temporary_database() as url:
        runner.upgrade(url)
        yield url


@pytest.fixture(scope="module")
def db_engine(migrated_database_url: URL) -> Iterator[Engine]:
    engine = make_engine(migrated_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def repository(db_engine: Engine) -> Repository:
    """A Repository on the module's database, emptied before the test."""
    with db_engine.begin() as connection:
        connection.execute(text("TRUNCATE legs, cdrs, outbox_events RESTART IDENTITY"))
    return Repository(db_engine)


@pytest.fixture
def sqlite_repository(tmp_path: Path) -> Iterator[Repository]:
    """A Repository on a fresh SQLite file (the demo's embedded fallback)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'outbound.sqlite3'}")
    yield Repository(engine)
    engine.dispose()
