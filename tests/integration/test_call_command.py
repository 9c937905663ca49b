"""`outbound call` usage errors: a clear message and exit status 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def run_call(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "call", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not a uri", "--proxy", "127.0.0.1:5060"], "TARGET_URI"),
        (["mailto:bob@example.com", "--proxy", "127.0.0.1:5060"], "unsupported scheme 'mailto'"),
        (["tel:", "--proxy", "127.0.0.1:5060"], "missing number"),
        (["sip:bob@example.com;transport=sctp", "--proxy", "127.0.0.1:5060"], "transport"),
        (["sips:bob@example.com", "--proxy", "127.0.0.1", "--transport", "udp"], "demands tls"),
        (["sip:b@example.com;transport=tcp", "--proxy", "127.0.0.1", "--transport", "udp"], "tcp"),
        (["sip:bob@example.com", "--proxy", "127.0.0.1:99999"], "--proxy"),
        (["sip:bob@example.com", "--proxy", "[::1"], "--proxy"),
        (["sip:bob@example.com", "--proxy", "127.0.0.1", "--bind", "127.0.0.1:x"], "--bind"),
        (["sip:bob@example.com", "--proxy", "127.0.0.1", "--auth-user", "alice"], "--auth-"),
        (["sip:bob@example.com", "--proxy", "127.0.0.1", "--hold", "-1"], "must be >= 0"),
        (["sip:bob@example.com", "--proxy", "127.0.0.1", "--transport", "sctp"], "sctp"),
        (["sip:bob@example.com", "--proxy", "127.0.0.1", "--session-expires", "30"], "30"),
        (["sip:bob@example.com"], "--proxy"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run_call(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bind_address_already_in_use_is_a_usage_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_call(
            "sip:bob@127.0.0.1", "--proxy", "127.0.0.1:5060", "--bind", f"127.0.0.1:{port}"
        )
    assert result.returncode == 2
    assert f"--bind 127.0.0.1:{port}: cannot bind UDP 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_bind_host_that_is_not_ours_is_one_line_naming_the_flag() -> None:
    result = run_call("sip:bob@127.0.0.1", "--proxy", "127.0.0.1:5060", "--bind", "192.0.2.1:0")
    assert result.returncode == 2
    assert "--bind 192.0.2.1:0: cannot bind UDP 192.0.2.1:0" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_names_every_option_of_the_spec() -> None:
    result = run_call("--help")
    assert result.returncode == 0
    for option in (
        "--proxy", "--transport", "--bind", "--from-user", "--from-display", "--auth-user",
        "--auth-password", "--ring-timeout", "--cancel-after", "--hold", "--session-expires",
        "--srtp", "--tls-ca", "--json",
    ):  # fmt: skip
        assert option in result.stdout
