"""SIPp opens its own connection to the LegManager's TCP listener (and, through an stunnel
client, to its TLS listener): its requests are framed, answered and the answers come back."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from sipstack.config import CoreConfig
from sipstack.transport import Transport
from tests.sipp.harness import (  # noqa: F401  (test_pki: a fixture)
    LOOPBACK,
    STUNNEL,
    Sipp,
    TestPki,
    free_ports,
    requires_sipp,
    requires_stunnel,
    test_pki,
)
from tests.waiting import wait_until
from workers.signaling.manager import LegManager
from workers.signaling.transports import TransportConfig

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(60), requires_sipp]

CALLS = 3


def _bound(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


class StunnelClient:
    """stunnel accepting plain TCP and connecting with TLS, verifying the name `localhost`."""

    def __init__(self, accept_port: int, connect_port: int, pki: TestPki, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.accept_port = accept_port
        self.config = workdir / "stunnel-client.conf"
        self.log = workdir / "stunnel-client.log"
        self.config.write_text(
            f"foreground = yes\ndebug = 5\noutput = {self.log}\n[sip]\nclient = yes\n"
            f"accept = {LOOPBACK}:{accept_port}\nconnect = {LOOPBACK}:{connect_port}\n"
            f"CAfile = {pki.ca_file}\nverifyChain = yes\ncheckHost = localhost\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StunnelClient:
        assert STUNNEL is not None, "stunnel4 is not installed"
        self.process = subprocess.Popen(
            [STUNNEL, str(self.config)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # A probe connection would make stunnel dial us: wait for the port to be bound instead.
        process = self.process
        wait_until(lambda: _bound(self.accept_port) or process.poll() is not None, 5,
                   f"stunnel client on port {self.accept_port}")
        assert process.poll() is None, self.log.read_text() if self.log.exists() else ""
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)

    def verified(self) -> bool:
        return "Certificate accepted" in self.log.read_text(errors="replace")


@pytest.mark.parametrize("transport", ["tcp", pytest.param("tls", marks=requires_stunnel)])
def test_sipp_requests_on_a_connection_it_opened_are_answered_on_it(
    transport: str, tmp_path: Path, test_pki: TestPki  # noqa: F811
) -> None:
    kind = Transport.parse(transport)

    async def scenario() -> None:
        manager = LegManager(CoreConfig(), TransportConfig(
            tls_server_cert_file=str(test_pki.cert_file),
            tls_server_key_file=str(test_pki.key_file),
        ))
        await manager.start()
        host, port = manager.transports.local_address(kind)
        tunnel = None
        if kind is Transport.TLS:
            tunnel_port = free_ports(1)
            tunnel = StunnelClient(tunnel_port, port, test_pki, tmp_path / "stunnel").start()
            port = tunnel_port
        sipp = Sipp("listener_uac_options.xml", free_ports(1), "tcp", tmp_path / "sipp", CALLS,
                    remote=f"{host}:{port}").start()
        try:
            result = await asyncio.to_thread(sipp.wait, 30)
        finally:
            sipp.stop()
            if tunnel is not None:
                tunnel.stop()
        assert result.exit_code == 0 and result.successful_calls == CALLS, result.explain()
        stats = manager.transports.stats
        assert stats.inbound_accepted == 1  # SIPp's t1 mode: one connection for every call
        assert stats.stream_messages_in == 2 * CALLS
        assert stats.stream_messages_out == 2 * CALLS
        assert stats.connections_opened == 0
        assert manager.core.stats.unknown_dialog_requests == CALLS  # the BYEs got 481
        if tunnel is not None:
            assert tunnel.verified()
        await manager.close(timeout=1)

    asyncio.run(asyncio.wait_for(scenario(), 50))
