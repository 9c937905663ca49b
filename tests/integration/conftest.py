"""Fixtures of the end-to-end tests: a migrated database of their own and a whole stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migrations import runner
from tests.db_fixtures import temporary_database
from tests.worker_stack import Stack


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh, migrated database (a test module may define its own `database_url`)."""
    with temporary_database("outbound_e2e") as url:
        runner.upgrade(url)
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    instance = Stack(tmp_path, database_url)
    try:
        yield instance
    finally:
        instance.close()
