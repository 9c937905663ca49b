"""The trunk keys about the wire: `keepalive_interval` (CRLF pings, default off) reaches the
worker's transports; `udp_only` (default false) keeps big requests on UDP."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.config.settings import ConfigError, load_trunks


def trunk_file(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "trunks.toml"
    path.write_text(f'[trunks.t1]\nproxy = "127.0.0.1:5999"\n{extra}\n')
    return path


def test_wire_keys_default_to_no_keepalive_and_tcp_for_big_requests(tmp_path: Path) -> None:
    trunk = load_trunks(trunk_file(tmp_path, "")).get("t1")
    assert trunk.keepalive_interval is None and trunk.udp_only is False
    assert trunk.transport_config("127.0.0.1", 0).keepalive_interval is None


def test_keepalive_interval_reaches_the_transports(tmp_path: Path) -> None:
    trunk = load_trunks(trunk_file(tmp_path, "keepalive_interval = 25\nudp_only = true")).get("t1")
    assert trunk.keepalive_interval == 25.0 and trunk.udp_only is True
    assert trunk.transport_config("127.0.0.1", 0).keepalive_interval == 25.0


@pytest.mark.parametrize(("extra", "needle"), [
    ("keepalive_interval = -1", "trunks.t1.keepalive_interval: must be a number >= 0"),
    ('keepalive_interval = "often"', "trunks.t1.keepalive_interval: must be a number"),
    ('udp_only = "yes"', "trunks.t1.udp_only"),
])
def test_bad_wire_keys_name_the_file_and_key(tmp_path: Path, extra: str, needle: str) -> None:
    path = trunk_file(tmp_path, extra)
    with pytest.raises(ConfigError) as raised:
        load_trunks(path)
    assert str(path) in str(raised.value) and needle in str(raised.value)
