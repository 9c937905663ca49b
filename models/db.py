"""Engines and session factories, from `OUTBOUND_DATABASE_URL`.

Reporting, the CLI, Celery threads and the recorder thread: `make_engine()` and
`make_session_factory(engine)`. Nothing awaits the database on an asyncio loop: the signaling
loop hands its writes to the recorder thread.

A `sqlite:///path` URL (the embedded demo) gets the schema from `metadata.create_all`; the
PostgreSQL schema comes only from the Alembic migrations (`outbound migrate`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

DATABASE_URL_ENV = "OUTBOUND_DATABASE_URL"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbound"


def database_url(url: str | URL | None = None, environ: Mapping[str, str] | None = None) -> URL:
    """The URL to use: the argument, else `OUTBOUND_DATABASE_URL`, else the local default.

    `postgresql://` and `postgres://` mean psycopg 3 here (SQLAlchemy's own default for
    `postgresql://` is psycopg2, which this project does not install).
    """
    env = os.environ if environ is None else environ
    chosen = make_url(url or env.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL)
    if chosen.drivername in ("postgresql", "postgres"):
        chosen = chosen.set(drivername="postgresql+psycopg")
    return chosen


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def make_engine(url: str | URL | None = None, **options: Any) -> Engine:
    """A sync engine. PostgreSQL connections are pre-pinged, so the pool heals after a server
    restart; SQLite gets foreign keys on and the schema created."""
    chosen = database_url(url)
    if is_sqlite(chosen):
        engine = create_engine(chosen, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        create_sqlite_schema(engine)
        return engine
    settings: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 5,
        "max_overflow": 5,
        "connect_args": {"connect_timeout": 5, "application_name": "outbound"},
    }
    settings.update(options)
    return create_engine(chosen, **settings)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: the repository hands them to other threads.
    return sessionmaker(engine, expire_on_commit=False)


def create_sqlite_schema(engine: Engine) -> None:
    """Create every table in a SQLite database (the demo's embedded fallback)."""
    from models.schema import metadata

    metadata.create_all(engine)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
