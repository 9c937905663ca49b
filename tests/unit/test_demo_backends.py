"""`outbound demo` without the `demo` extra says what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cli.demo.backends import BackendError, choose_backends


def test_without_the_demo_extra_the_embedded_broker_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # as if not installed
    with pytest.raises(BackendError) as missing:
        choose_backends(tmp_path, environ={})
    message = str(missing.value)
    assert "pip install -e '.[demo]'" in message
    assert "OUTBOUND_REDIS_URL" in message
