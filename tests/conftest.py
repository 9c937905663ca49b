"""Fixtures and marks shared by the whole suite (each area's fixtures live in their own module).

Where a test lives says what it needs, and the directory becomes its mark:
- tests/unit: no services, no external programs (loopback sockets at most): `-m unit`
- tests/integration: the real PostgreSQL, Redis, RabbitMQ, worker processes: `-m services`
- tests/sipp: SIPp (and stunnel/tshark) as the far end: `-m sipp`
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.db_fixtures", "tests.redis_fixtures"]

# CI: reproducible examples and no per-example deadline (a shared 2-core machine stalls);
# local runs keep Hypothesis' random exploration. Tests that set max_examples keep theirs.
settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

_MARK_BY_DIRECTORY = {"unit": "unit", "integration": "services", "sipp": "sipp"}
_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(_TESTS)
        mark = _MARK_BY_DIRECTORY.get(relative.parts[0])
        if mark is not None:
            item.add_marker(mark)
