"""What every SQL module of models/ shares: the executor type and row-count handling."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection
from sqlalchemy.orm import Session

Executor = Session | Connection

# Keep the driver's row count for executemany too (SQLAlchemy drops it otherwise).
ROWCOUNT = {"preserve_rowcount": True}


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def connection_of(executor: Executor) -> Connection:
    """The Core connection of a Session's transaction, or the Connection itself."""
    return executor if isinstance(executor, Connection) else executor.connection()


def count(rowcount: int) -> int:
    # -1 means "unknown"; psycopg 3 and sqlite3 report sums for executemany, so it is not seen.
    return max(rowcount, 0)
