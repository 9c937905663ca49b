"""The repository the workers call (sync: Celery threads, CLI, the recorder thread).

Every method is one transaction, retried with tenacity on transient errors only (connection
lost, server restarting; never an integrity error). Each method is safe to repeat: claims carry
a token, inserts are ON CONFLICT DO NOTHING, transitions only move forward. Leg transitions,
CDRs and outbox rows are written by the worker's recorder (workers.runtime.recorder), which runs
`persist_batch` through `run_connection`; nothing else writes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import tenacity
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from models import operations, outbox_ops
from models.db import make_engine, make_session_factory
from models.dial_fields import DialFields, validate_dial_fields
from models.legs import Leg
from models.times import to_datetime, utc_now
from models.transient import retry_policy

T = TypeVar("T")


class Repository:
    def __init__(self, engine: Engine, *, retry: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self._sessions = make_session_factory(engine)
        self._retry = dict(retry) if retry is not None else retry_policy()

    @classmethod
    def from_url(cls, url: str | URL | None = None) -> Repository:
        """A repository on `url` (default: OUTBOUND_DATABASE_URL)."""
        return cls(make_engine(url))

    def run(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `operation(session, *args, **kwargs)` in one transaction, retrying transient
        errors; every retry is a fresh transaction on a fresh connection."""
        for attempt in tenacity.Retrying(**self._retry):
            with attempt, self._sessions.begin() as session:
                return operation(session, *args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def run_connection(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run` on a plain Core Connection instead of a Session (the worker's hot path:
        operations that take `operations.Executor` skip the ORM session around them)."""
        for attempt in tenacity.Retrying(**self._retry):
            with attempt, self.engine.begin() as connection:
                return operation(connection, *args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    # --- legs ---------------------------------------------------------------------------------

    def create_leg(self, fields: Mapping[str, Any] | DialFields) -> tuple[Leg, bool]:
        """Validate and store a queued leg. Raises InvalidDialRequest before touching the
        database. A live leg with the same correlation_id is returned with created=False."""
        valid = validate_dial_fields(fields)
        return self.run(operations.insert_leg, valid, uuid.uuid4())

    def get_leg(self, leg_id: uuid.UUID | str) -> Leg | None:
        return self.run(operations.get_leg, leg_id)

    def claim_leg(
        self,
        *,
        worker: str,
        leg_id: uuid.UUID | str | None = None,
        correlation_id: str | None = None,
        at: float | datetime | None = None,
    ) -> Leg | None:
        """Claim a queued leg for `worker`; None when another claim won or it is not queued."""
        return self.run(
            operations.claim_leg,
            worker=worker,
            token=uuid.uuid4(),
            at=to_datetime(at) if at is not None else utc_now(),
            leg_id=operations.as_uuid(leg_id) if leg_id is not None else None,
            correlation_id=correlation_id,
        )

    def purge_published(self, before: float | datetime) -> int:
        """Delete outbox rows published before `before`."""
        return self.run(outbox_ops.purge_published, to_datetime(before))

    def session(self) -> Session:
        """A plain session for ad-hoc reads (reporting, tests); the caller closes it."""
        return self._sessions()
