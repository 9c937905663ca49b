"""Batch INSERT … ON CONFLICT DO NOTHING into cdrs, outbox_events and legs (PostgreSQL arrays,
SQLite executemany)."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, text
from sqlalchemy.dialects import postgresql

from models.cdrs import Cdr
from models.executor import ROWCOUNT, count
from models.legs import Leg
from models.outbox import OutboxEvent

_cdrs: Table = Cdr.__table__  # type: ignore[assignment]
_outbox: Table = OutboxEvent.__table__  # type: ignore[assignment]
_SERVER_SET = frozenset({"recorded_at", "created_at", "published_at"})


def insert_rows(connection: Connection, table_name: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert rows ignoring natural-key conflicts; how many were new."""
    if not rows:
        return 0
    if connection.dialect.name == "postgresql":
        return insert_rows_pg(connection, table_name, rows)
    statement = insert_ignoring(connection.dialect.name, table_name)
    return count(connection.execute(statement, rows, execution_options=ROWCOUNT).rowcount)


@functools.cache
def _pg_unnest_insert(table_name: str) -> tuple[str, tuple[str, ...]]:
    """INSERT … SELECT FROM unnest(one array per column) … ON CONFLICT DO NOTHING, in the
    arrays' order (WITH ORDINALITY), so generated ids follow the batch order."""
    table, key = {"cdrs": (_cdrs, "call_id"), "outbox_events": (_outbox, "event_id")}[table_name]
    names = tuple(
        column.name for column in table.columns
        if not column.primary_key and column.name not in _SERVER_SET
    )
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = ", ".join(
        f"%({name})b::{table.c[name].type.compile(dialect=dialect).lower()}[]" for name in names
    )
    listed = ", ".join(names)
    sql = (
        f"INSERT INTO {table.name} ({listed}) "
        f"SELECT {listed} FROM unnest({arrays}) WITH ORDINALITY AS v({listed}, n) "
        f"ORDER BY n ON CONFLICT ({key}) DO NOTHING"
    )
    return sql, names


def _pg_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def insert_rows_pg(
    connection: Connection, table_name: str, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Insert rows (column -> value) into cdrs or outbox_events as arrays; how many were new."""
    sql, names = _pg_unnest_insert(table_name)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for row in rows:
        for name in names:
            columns[name].append(_pg_value(row[name]))
    return count(connection.exec_driver_sql(sql, columns).rowcount)


@functools.cache
def insert_ignoring(dialect: str, table: str) -> Any:
    """INSERT … ON CONFLICT (the table's natural key) DO NOTHING, built once.

    Written as text with typed parameters rather than `postgresql.insert(...)`: SQLAlchemy
    does not cache the dialect INSERT constructs and would compile one per batch. PostgreSQL
    and SQLite (3.24+) read the same text.
    """
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database dialect {dialect!r} (PostgreSQL or SQLite)")
    if table == "cdrs":
        return _ignoring_insert(_cdrs, "call_id")
    if table == "outbox_events":
        return _ignoring_insert(_outbox, "event_id")
    raise ValueError(f"no ignoring insert for table {table!r}")


def _ignoring_insert(table: Table, key: str) -> Any:
    # every column the caller writes: all but the generated id and the server-set times
    names = [
        column.name for column in table.columns
        if not column.primary_key and column.name not in _SERVER_SET
    ]
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + name for name in names)}) "
        f"ON CONFLICT ({key}) DO NOTHING"
    ).bindparams(*(bindparam(name, type_=table.c[name].type) for name in names))


_LEG_COLUMNS = ("id", "correlation_id", "scenario", "script_id", "trunk", "request_uri",
                "signaling_addr", "caller_user", "caller_display_name", "request", "state")


@functools.cache
def _pg_legs_insert() -> str:
    """Queued legs as one array per column; no conflict target (the primary key, derived from
    the correlation_id, and the live-correlation_id index both count); the new ids come back."""
    legs: Table = Leg.__table__  # type: ignore[assignment]
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = ", ".join(
        f"%({name})b::{legs.c[name].type.compile(dialect=dialect).lower()}[]"
        for name in _LEG_COLUMNS
    )
    listed = ", ".join(_LEG_COLUMNS)
    return (
        f"INSERT INTO legs ({listed}) SELECT {listed} FROM unnest({arrays}) "
        f"WITH ORDINALITY AS v({listed}, n) ORDER BY n ON CONFLICT DO NOTHING RETURNING id"
    )


def insert_legs_pg(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> set[Any]:
    """Insert queued legs (column -> value, `_LEG_COLUMNS`) in one statement, ignoring
    conflicts; the ids of the rows that were new."""
    if not rows:
        return set()
    columns = {name: [_pg_value(row[name]) for row in rows] for name in _LEG_COLUMNS}
    return {leg_id for (leg_id,) in connection.exec_driver_sql(_pg_legs_insert(), columns)}
