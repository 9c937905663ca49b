"""`outbound worker` flags for metrics, logs and TLS, checked before any service is contacted:
a bad value exits 2 naming the flag, the variable or the file and key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.commands.worker import _log_level, command
from tests.sipp.harness import TestPki

# Nothing listens here: a command that got as far as contacting a service would fail with 1.
UNREACHABLE = {"OUTBOUND_REDIS_URL": "redis://127.0.0.1:9/0",
               "OUTBOUND_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/none"}


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args), env={**UNREACHABLE, **(env or {})})
    return result.exit_code, result.output


def trunks_file(directory: Path, extra: str = "") -> Path:
    path = directory / "trunks.toml"
    path.write_text(f'[trunks.t]\nproxy = "localhost:5061"\ntransport = "tls"\n{extra}\n')
    return path


def test_a_missing_ca_file_stops_the_worker_naming_the_file_and_key(tmp_path: Path) -> None:
    path = trunks_file(tmp_path, 'tls_ca_file = "absent-ca.pem"')
    status, output = run("--trunk", "t", "--trunks", str(path))
    assert status == 2, output
    assert f"{path}: trunks.t.tls_ca_file: {tmp_path / 'absent-ca.pem'}: cannot read" in output
    assert "Traceback" not in output


def test_a_listener_key_that_does_not_fit_names_the_flag(tmp_path: Path) -> None:
    mine, other = TestPki.create(tmp_path / "a"), TestPki.create(tmp_path / "b")
    status, output = run("--trunk", "t", "--trunks", str(trunks_file(tmp_path)),
                         "--tls-cert-file", str(mine.cert_file),
                         "--tls-key-file", str(other.key_file))
    assert status == 2, output
    assert f"--tls-key-file: {other.key_file}: this key does not belong" in output
    status, output = run("--trunk", "t", "--trunks", str(trunks_file(tmp_path)),
                         env={"OUTBOUND_TLS_CERT_FILE": str(tmp_path / "nope.pem")})
    assert status == 2 and "OUTBOUND_TLS_CERT_FILE: " in output, output


def test_a_metrics_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, output = run("--trunk", "t", "--trunks", str(trunks_file(tmp_path)),
                             "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    assert status == 2, output
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in output


@pytest.mark.parametrize(("args", "env", "level"), [
    ((), {}, "INFO"),
    (("--log-level", "debug"), {}, "DEBUG"),
    (("--loglevel", "warning"), {}, "WARNING"),  # the old spelling still works
    ((), {"OUTBOUND_LOG_LEVEL": "error"}, "ERROR"),
    (("--loglevel", "warning"), {"OUTBOUND_LOG_LEVEL": "debug"}, "WARNING"),  # flag > env
    (("--log-level", "info", "--loglevel", "debug"), {}, "INFO"),
])
def test_log_level_flags_and_environment(
    args: tuple[str, ...], env: dict[str, str], level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTBOUND_LOG_LEVEL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with command.make_context("worker", ["--trunk", "t", *args]) as context:
        assert _log_level(context.params["log_level"], context.params["legacy_log_level"]) == level


def test_help_shows_the_new_flags_and_hides_the_old_spelling() -> None:
    status, output = run("--help")
    assert status == 0
    for flag in ("--metrics-port", "--metrics-host", "--log-format", "--log-level",
                 "--tls-cert-file", "--tls-key-file", "--no-task-events"):
        assert flag in output
    assert "--loglevel" not in output
