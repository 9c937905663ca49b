"""`outbound trunks check` against the carrier simulator (UDP, TCP) and against closed ports."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from tests.carrier_support import CarrierProcess
from tests.sipp.harness import (  # noqa: F401 (fixtures)
    SipPeerFactory,
    TestPki,
    free_ports,
    sip_peers,
    test_pki,
)


@pytest.fixture(scope="module")
def carrier() -> Iterator[CarrierProcess]:
    process = CarrierProcess("--ring", "0").start()
    yield process
    process.stop()


@pytest.fixture
def trunks_file(tmp_path: Path, carrier: CarrierProcess) -> Path:
    closed = free_ports(1)  # nothing listens here: UDP gets no answer, TCP is refused
    path = tmp_path / "trunks.toml"
    path.write_text(
        f'[trunks.live]\nproxy = "127.0.0.1:{carrier.port}"\n\n'
        f'[trunks.live-tcp]\nproxy = "127.0.0.1:{carrier.port}"\ntransport = "tcp"\n\n'
        f'[trunks.dead]\nproxy = "127.0.0.1:{closed}"\n\n'
        f'[trunks.dead-tcp]\nproxy = "127.0.0.1:{closed}"\ntransport = "tcp"\n'
    )
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["trunks", "check", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_reachable_trunks_show_status_and_rtt(trunks_file: Path) -> None:
    code, output = run("--trunks", str(trunks_file), "--trunk", "live", "--trunk", "live-tcp",
                       "--bind", "127.0.0.1")
    assert code == 0, output
    lines = output.strip().splitlines()
    assert lines[0].split()[:5] == ["TRUNK", "PROXY", "TRANSPORT", "RESULT", "RTT"]
    for name, transport in (("live", "udp"), ("live-tcp", "tcp")):
        row = next(line for line in lines if line.split()[0] == name)
        assert f" {transport} " in row and "reachable: 200 OK" in row and row.endswith(" ms")


def test_closed_ports_are_unreachable_and_the_exit_status_says_so(trunks_file: Path) -> None:
    code, output = run("--trunks", str(trunks_file), "--timeout", "1", "--json",
                       "--bind", "127.0.0.1")
    assert code == 1, output
    results = {entry["trunk"]: entry for entry in map(json.loads, output.splitlines())}
    assert set(results) == {"live", "live-tcp", "dead", "dead-tcp"}
    assert results["live"]["reachable"] and results["live"]["status"] == 200
    assert results["live"]["rtt_ms"] > 0
    dead = results["dead"]
    assert not dead["reachable"] and dead["error"] == "no response in 1 s"
    assert dead["sent"] >= 2  # UDP was retransmitted (Timer E) before giving up
    assert results["dead-tcp"]["error"] == "connection failed"


def test_the_carrier_answers_raw_out_of_dialog_options(carrier: CarrierProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(5)
        port = probe.getsockname()[1]
        probe.sendto(
            f"OPTIONS sip:127.0.0.1:{carrier.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKraw1\r\n"
            "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
            "Call-ID: raw1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode(),
            ("127.0.0.1", carrier.port),
        )
        reply = probe.recv(4096)
    assert reply.startswith(b"SIP/2.0 200 OK\r\n") and b"CSeq: 7 OPTIONS" in reply


def test_config_errors_exit_2_naming_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[trunks.x]\nproxy = "127.0.0.1:5060"\ncolour = "blue"\n')
    code, output = run("--trunks", str(bad))
    assert code == 2 and str(bad) in output and "colour" in output
    assert "Traceback" not in output
    good = tmp_path / "good.toml"
    good.write_text('[trunks.x]\nproxy = "127.0.0.1:5060"\n')
    code, output = run("--trunks", str(good), "--trunk", "nope")
    assert code == 2 and "nope" in output and str(good) in output
    code, output = run("--trunks", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in output


def test_a_tls_trunk_is_checked_with_its_own_ca(
    tmp_path: Path,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_options.xml", "tls")
    path = tmp_path / "trunks.toml"
    path.write_text(
        f'[trunks.private-ca]\nproxy = "localhost:{peer.port}"\ntransport = "tls"\n'
        f'tls_ca_file = "{test_pki.ca_file}"\n\n'
        f'[trunks.system-ca]\nproxy = "localhost:{peer.port}"\ntransport = "tls"\n'
    )
    common = ("--trunks", str(path), "--json", "--timeout", "3", "--bind", "127.0.0.1")
    # One trunk at a time: the SIPp behind stunnel serves one TCP connection at a time.
    code, output = run(*common, "--trunk", "private-ca")
    (result,) = map(json.loads, output.splitlines())
    assert (code, result["reachable"], result["status"]) == (0, True, 200), output
    assert peer.wait(10).successful_calls == 1
    # our test CA is trusted only where the trunk names it: the other trunk refuses the cert
    code, output = run(*common, "--trunk", "system-ca")
    (result,) = map(json.loads, output.splitlines())
    assert (code, result["reachable"]) == (1, False), output
