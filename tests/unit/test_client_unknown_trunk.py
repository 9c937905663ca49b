"""`enqueue_dial` refuses a trunk no trunks file defines, before anything is stored or
published: no worker serves `dial.<unknown>`, so such a dial would stay queued forever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers.client import DialClient
from workers.config.settings import ConfigError, Settings


class _NothingStored:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the repository was used ({name}) for an unknown trunk")


@pytest.mark.parametrize("to", ["sip:bob@127.0.0.1", "sips:bob@example.com", "tel:+15551234",
                                "+15551234"])
def test_enqueue_dial_to_an_unknown_trunk_raises_naming_it_and_the_file(
    tmp_path: Path, to: str
) -> None:
    trunks = tmp_path / "trunks.toml"
    trunks.write_text('[trunks.t1]\nproxy = "127.0.0.1:5999"\n')
    settings = Settings.from_env(trunks_file=str(trunks))
    client = DialClient(settings, repository=_NothingStored())  # type: ignore[arg-type]
    try:
        with pytest.raises(ConfigError) as raised:
            client.enqueue_dial("nosuch", to)
    finally:
        client.redis.close()
    assert str(raised.value) == (
        f"unknown trunk 'nosuch': {trunks} has no [trunks.nosuch] table (trunks defined: t1)"
    )
