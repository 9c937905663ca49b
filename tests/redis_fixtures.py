"""A real Redis (127.0.0.1:6379) under a key prefix of the test's own, deleted afterwards.

A plugin of tests/conftest.py, so `redis_client` and `redis_settings` are there for every test
(a module needing other settings, e.g. a short heartbeat, overrides `redis_settings`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from workers.config.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_settings() -> Settings:
    return Settings(key_prefix=f"test-{uuid.uuid4().hex[:12]}", heartbeat_ttl=10.0)


@pytest.fixture
def redis_client(redis_settings: Settings) -> Iterator[redis.Redis[Any]]:
    connection: redis.Redis[Any] = redis.Redis.from_url(REDIS_URL)
    yield connection
    keys = list(connection.scan_iter(f"{redis_settings.key_prefix}:*"))
    if keys:
        connection.delete(*keys)
    connection.close()
