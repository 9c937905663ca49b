"""`outbound trunks check` prints the workers' shared health verdict for trunks that check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from cli.main import main
from tests.redis_fixtures import REDIS_URL
from tests.sipp.harness import free_ports
from workers.config.settings import Settings
from workers.coordination.health import TrunkHealthBoard

pytestmark = pytest.mark.services


def test_the_board_verdict_is_shown_next_to_the_ping(
    tmp_path: Path, redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    dead = free_ports(1)
    path = tmp_path / "trunks.toml"
    path.write_text(
        f'[trunks.checked]\nproxy = "127.0.0.1:{dead}"\nhealth_check = true\n'
        f'[trunks.fresh]\nproxy = "127.0.0.1:{dead}"\nhealth_check = true\n'
        f'[trunks.plain]\nproxy = "127.0.0.1:{dead}"\n'
    )
    board = TrunkHealthBoard(redis_client, redis_settings)
    for now in (1_700_000_000.0, 1_700_000_001.0, 1_700_000_002.0):
        board.record("checked", False, now)
    env = {"OUTBOUND_REDIS_URL": REDIS_URL, "OUTBOUND_KEY_PREFIX": redis_settings.key_prefix}
    common = ["trunks", "check", "--trunks", str(path), "--timeout", "0.3", "--bind",
              "127.0.0.1"]

    result = CliRunner().invoke(main, [*common, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    health = {entry["trunk"]: entry["health"] for entry in
              map(json.loads, result.output.splitlines())}
    assert health == {
        "checked": "DOWN since 2023-11-14T22:13:22.000000Z (3 misses in a row)",
        "fresh": "up (no ping results recorded)",
        "plain": None,
    }

    text = CliRunner().invoke(main, common, env=env, catch_exceptions=False).output
    assert "WORKERS' HEALTH CHECKS (shared in Redis)" in text
    assert "checked  DOWN since 2023-11-14T22:13:22.000000Z (3 misses in a row)" in text

    away = {**env, "OUTBOUND_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = CliRunner().invoke(main, [*common, "--json", "--trunk", "checked"], env=away,
                                catch_exceptions=False)
    (entry,) = map(json.loads, result.output.splitlines())
    assert entry["health"] == "unknown (Redis unavailable: ConnectionError)"
