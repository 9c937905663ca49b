"""`outbound carrier` options, its metrics view, and the background runner."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from carrier.config import CarrierConfig, Outcome
from carrier.metrics import carrier_registry
from carrier.shell import BackgroundCarrier
from cli.commands.carrier import outcome_weights
from cli.main import main


def test_an_omitted_answer_weight_takes_what_the_others_leave() -> None:
    weights = outcome_weights(None, 0.2, 0.1, 0.0)
    assert weights[Outcome.ANSWER] == pytest.approx(0.7)
    assert outcome_weights(None, 0.0, 0.0, 0.0) == {
        Outcome.ANSWER: 1.0, Outcome.BUSY: 0.0, Outcome.NO_ANSWER: 0.0, Outcome.REJECT: 0.0}
    assert outcome_weights(3, 1, 0, 0)[Outcome.ANSWER] == 3  # weights, not only probabilities


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--remote-hangup-reason", 'Q.850;cause=16;text="unclosed'], "--remote-hangup-reason"),
    (["--answer", "0"], "all 0"),
    (["--busy", "-1"], "--busy"),
    (["--session-expires", "30"], "--session-expires"),
])
def test_bad_options_exit_2_naming_the_option(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["carrier", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["carrier", "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output


def test_background_carrier_answers_and_its_metrics_show_the_outcomes() -> None:
    carrier = BackgroundCarrier(CarrierConfig(weights={Outcome.BUSY: 1.0}, ring=0.0)).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind(("127.0.0.1", 0))
            caller.settimeout(5)
            port = caller.getsockname()[1]
            caller.sendto(
                f"INVITE sip:1@127.0.0.1:{carrier.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbg1\r\n"
                "From: <sip:a@127.0.0.1>;tag=f1\r\nTo: <sip:1@127.0.0.1>\r\n"
                f"Call-ID: bg1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{port}>\r\n"
                "Content-Length: 0\r\n\r\n".encode(),
                ("127.0.0.1", carrier.port),
            )
            statuses: list[int] = []
            while not statuses or statuses[-1] < 200:
                statuses.append(int(caller.recv(4096)[8:11]))
        assert statuses == [100, 180, 486]
        text = generate_latest(carrier_registry(carrier.core)).decode()
        assert 'outbound_carrier_calls_total{outcome="busy"} 1.0' in text
        assert "outbound_carrier_invites_total 1.0" in text
    finally:
        stats = carrier.stop()
    assert stats.busy == 1
