"""`outbound carrier` over real sockets with SIPp as the caller (UDP and TCP)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.carrier_support import CarrierProcess
from tests.sipp.harness import Sipp, SippResult, free_ports, requires_sipp

pytestmark = [pytest.mark.sipp, requires_sipp]


@pytest.fixture
def carriers() -> Iterator[list[CarrierProcess]]:
    started: list[CarrierProcess] = []
    yield started
    for carrier in started:
        carrier.kill()


def start_carrier(carriers: list[CarrierProcess], *flags: str) -> CarrierProcess:
    carrier = CarrierProcess(*flags)
    carriers.append(carrier)
    return carrier.start()


def call(
    carrier: CarrierProcess,
    tmp_path: Path,
    scenario: str,
    *,
    calls: int = 1,
    transport: str = "udp",
    extra: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> SippResult:
    sipp = Sipp(
        scenario=scenario, port=free_ports(1), transport=transport, workdir=tmp_path / "sipp",
        calls=calls, remote=f"127.0.0.1:{carrier.port}",
        extra_args=("-r", str(min(calls, 50)), *extra),
    )
    sipp.start()
    return sipp.wait(timeout=timeout)


def test_sipp_default_uac_calls_are_answered_and_hung_up(
    carriers: list[CarrierProcess], tmp_path: Path
) -> None:
    metrics_port = free_ports(1)
    carrier = start_carrier(carriers, "--ring", "0.2", "--metrics-port", str(metrics_port))
    result = call(carrier, tmp_path, "uac", calls=20)
    assert result.exit_code == 0 and result.successful_calls == 20, result.explain()
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        metrics = page.read().decode()
    assert 'outbound_carrier_calls_total{outcome="answered"} 20.0' in metrics
    assert "outbound_carrier_active_calls 0.0" in metrics
    summary = carrier.stop()
    assert summary["calls"] == 20
    assert summary["answered"] == 20 and summary["caller_hangups"] == 20


def test_busy_is_486_and_the_ack_stops_its_retransmission(
    carriers: list[CarrierProcess], tmp_path: Path
) -> None:
    carrier = start_carrier(carriers, "--busy", "1", "--ring", "0")
    result = call(carrier, tmp_path, "carrier_uac_busy.xml", calls=5)
    assert result.exit_code == 0 and result.successful_calls == 5, result.explain()
    assert result.message_count(3, "486", "Retrans") == 0, result.explain()
    assert carrier.stop()["busy"] == 5


def test_no_answer_rings_until_the_caller_cancels(
    carriers: list[CarrierProcess], tmp_path: Path
) -> None:
    carrier = start_carrier(carriers, "--no-answer", "1", "--answer", "0")
    result = call(carrier, tmp_path, "carrier_uac_cancel.xml", calls=5)
    assert result.exit_code == 0 and result.successful_calls == 5, result.explain()
    assert result.message_count(5, "487", "Retrans") == 0, result.explain()
    summary = carrier.stop()
    assert summary["cancelled"] == 5 and summary["answered"] == 0


def test_hold_then_the_carrier_hangs_up_with_the_given_reason(
    carriers: list[CarrierProcess], tmp_path: Path
) -> None:
    carrier = start_carrier(
        carriers, "--ring", "0", "--hold", "0.3",
        "--remote-hangup-reason", 'Q.850;cause=16;text="Normal call clearing"',
    )
    result = call(carrier, tmp_path, "carrier_uac_remote_bye.xml", calls=5)
    assert result.exit_code == 0 and result.successful_calls == 5, result.explain()
    assert carrier.stop()["carrier_hangups"] == 5


@pytest.mark.parametrize(("password", "outcome"), [("carrier", "answered"),
                                                   ("wrong", "auth_failed")])
def test_digest_challenge_accepts_the_right_password_and_refuses_a_wrong_one(
    carriers: list[CarrierProcess], tmp_path: Path, password: str, outcome: str
) -> None:
    carrier = start_carrier(carriers, "--challenge", "--ring", "0")
    result = call(carrier, tmp_path, "carrier_uac_auth.xml", calls=3,
                  extra=("-au", "outbound", "-ap", password))
    assert result.exit_code == 0 and result.successful_calls == 3, result.explain()
    assert result.message_count(1, "401", "Retrans") == 0, result.explain()
    assert result.message_count(6, "403", "Retrans") == 0, result.explain()
    summary = carrier.stop()
    assert summary["challenged"] == 3 and summary[outcome] == 3


def test_in_dialog_requests_and_session_refresh_over_tcp(
    carriers: list[CarrierProcess], tmp_path: Path
) -> None:
    carrier = start_carrier(carriers, "--ring", "0", "--session-expires", "120",
                            "--transport", "tcp")
    result = call(carrier, tmp_path, "carrier_uac_in_dialog.xml", calls=3, transport="tcp")
    assert result.exit_code == 0 and result.successful_calls == 3, result.explain()
    summary = carrier.stop()
    assert summary["answered"] == 3 and summary["caller_hangups"] == 3
