"""The repository for code that awaits the database on an asyncio loop (psycopg 3 async).

The leg and CDR methods of models.repository.Repository, as coroutines (the outbox is the
workers' business: workers.events.stream), with the same guarantees; the operations
run through `AsyncSession.run_sync`, so both share one implementation. An AsyncRepository
belongs to the event loop that first uses it (its engine's connections do).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import tenacity
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from models import operations
from models.db import make_async_engine, make_async_session_factory
from models.dial_fields import DialFields, validate_dial_fields
from models.enums import SIGNALING_STATES, LegState
from models.legs import Leg
from models.operations import PendingCdr, Transition
from models.times import to_datetime, utc_now
from models.transient import retry_policy
from sipstack.cdr import CdrRecord

T = TypeVar("T")


class AsyncRepository:
    def __init__(self, engine: AsyncEngine, *, retry: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self._sessions = make_async_session_factory(engine)
        self._retry = dict(retry) if retry is not None else retry_policy()

    @classmethod
    def from_url(cls, url: str | URL | None = None) -> AsyncRepository:
        return cls(make_async_engine(url))

    async def run(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async for attempt in tenacity.AsyncRetrying(**self._retry):
            with attempt:
                async with self._sessions.begin() as session:
                    return await session.run_sync(operation, *args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def create_leg(self, fields: Mapping[str, Any] | DialFields) -> tuple[Leg, bool]:
        valid = validate_dial_fields(fields)
        return await self.run(operations.insert_leg, valid, uuid.uuid4())

    async def get_leg(self, leg_id: uuid.UUID | str) -> Leg | None:
        return await self.run(operations.get_leg, leg_id)

    async def claim_leg(
        self,
        *,
        worker: str,
        leg_id: uuid.UUID | str | None = None,
        correlation_id: str | None = None,
        at: float | datetime | None = None,
    ) -> Leg | None:
        return await self.run(
            operations.claim_leg,
            worker=worker,
            token=uuid.uuid4(),
            at=to_datetime(at) if at is not None else utc_now(),
            leg_id=operations.as_uuid(leg_id) if leg_id is not None else None,
            correlation_id=correlation_id,
        )

    async def record_transition(
        self, leg_id: uuid.UUID | str, state: LegState | str, at: float | datetime, **fields: Any
    ) -> bool:
        transition = Transition.make(leg_id, state, at, **fields)
        return await self.run(operations.apply_transitions, [transition]) == 1

    async def record_transitions(self, transitions: Sequence[Transition]) -> int:
        return await self.run(operations.apply_transitions, transitions)

    async def mark_leg_ended(
        self,
        leg_id: uuid.UUID | str,
        at: float | datetime,
        *,
        failed: bool = False,
        status_code: int | None = None,
        reason: str | None = None,
    ) -> bool:
        ending = Transition.ended(leg_id, at, failed=failed, status_code=status_code, reason=reason)
        return await self.record_transitions([ending]) == 1

    async def legs_owned_by(
        self, worker: str, states: Iterable[LegState | str] = SIGNALING_STATES
    ) -> list[Leg]:
        return await self.run(operations.legs_owned_by, worker, [LegState(s) for s in states])

    async def adopt_legs(
        self,
        from_worker: str,
        to_worker: str,
        states: Iterable[LegState | str] = SIGNALING_STATES,
    ) -> list[Leg]:
        return await self.run(
            operations.adopt_legs,
            from_worker,
            to_worker,
            [LegState(s) for s in states],
            utc_now(),
        )

    async def write_cdr(
        self, record: CdrRecord, worker: str, *, leg_id: uuid.UUID | str | None = None
    ) -> bool:
        pending = PendingCdr(record, worker, operations.as_uuid(leg_id) if leg_id else None)
        return await self.run(operations.insert_cdrs, [pending]) == 1

    async def write_cdrs(self, pending: Sequence[PendingCdr]) -> int:
        return await self.run(operations.insert_cdrs, pending)

