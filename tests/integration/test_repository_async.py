"""The async repository (psycopg 3 async) on the real PostgreSQL, driven by asyncio.run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.engine import URL

from models.async_repository import AsyncRepository
from models.enums import LegState
from models.repository import Repository
from sipstack.cdr import CdrRecord

T0 = 1_700_000_000.0


def test_async_repository_runs_a_leg_from_request_to_cdr(
    migrated_database_url: URL,
    repository: Repository,
    make_cdr: Callable[..., CdrRecord],
) -> None:
    async def scenario() -> str:
        repo = AsyncRepository.from_url(migrated_database_url)
        try:
            fields = {
                "correlation_id": "async-1",
                "trunk": "carrier-a",
                "request_uri": "sips:bob@carrier.test",
            }
            leg, created = await repo.create_leg(fields)
            again, created_again = await repo.create_leg(fields)
            assert created and not created_again and again.id == leg.id

            claims = await asyncio.gather(
                *(repo.claim_leg(worker=f"w{i}", leg_id=leg.id, at=T0) for i in range(4))
            )
            winners = [claimed for claimed in claims if claimed is not None]
            assert len(winners) == 1
            owner = winners[0].owner_worker
            assert owner is not None

            assert await repo.record_transition(leg.id, "inviting", T0, call_id="a1@h")
            assert await repo.record_transition(leg.id, "established", T0 + 2, remote_tag="r")
            owned = await repo.legs_owned_by(owner)
            assert [item.id for item in owned] == [leg.id]
            assert owned[0].state is LegState.ESTABLISHED

            assert await repo.mark_leg_ended(leg.id, T0 + 20)
            assert await repo.write_cdr(make_cdr("a1@h", correlation_id="async-1"), owner)
            assert not await repo.write_cdr(make_cdr("a1@h"), owner)
            return owner
        finally:
            await repo.dispose()

    owner = asyncio.run(scenario())

    # What the async side wrote is what the sync side reads.
    legs = repository.legs_owned_by(owner, ["ended"])
    assert len(legs) == 1
    assert legs[0].call_id == "a1@h"
    assert legs[0].ended_at is not None
