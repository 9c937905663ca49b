"""RFC 3261 §18.1.1: a request over 1300 bytes is not sent over UDP. Our INVITE with a big
Identity header (RFC 8224 PASSporTs are long) to a trunk configured for UDP goes over TCP to
the same host and port, its top Via saying TCP; SIPp listens on TCP only there, so only a
request that moved arrives. With `udp_only` it stays on UDP (SIPp on UDP gets it)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import LegEnded
from sipstack.transport import Transport
from tests.sipp.harness import LOOPBACK, Sipp, free_ports, requires_sipp
from tests.waiting import eventually
from workers.signaling.manager import LegManager
from workers.signaling.transports import TransportConfig

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(60), requires_sipp]

IDENTITY = "eyJhbGciOiJFUzI1NiJ9." + "A" * 1400 + ".c2ln;info=<https://cert.example/x.pem>"


def big_invite_call(sipp_transport: str, tmp_path: Path, *, udp_only: bool) -> str:
    """Dial the SIPp UAS over UDP with a big INVITE, BYE after the answer; SIPp's message log."""
    port = free_ports(1)
    sipp = Sipp("uas_answer.xml", port, sipp_transport, tmp_path / "sipp", keys={
        "adv_host": LOOPBACK, "adv_port": str(port), "adv_transport": sipp_transport,
    }).start()  # fmt: skip

    async def main() -> None:
        manager = LegManager(CoreConfig(udp_only=udp_only), TransportConfig(bind_host=LOOPBACK))
        await manager.start()
        try:
            call_id = await manager.dial(DialRequest(
                target=DialTarget(request_uri=f"sip:service@{LOOPBACK}:{port}",
                                  signaling_addr=f"{LOOPBACK}:{port}", transport=Transport.UDP),
                correlation_id="big-1", identity_header=IDENTITY,
            ))  # fmt: skip
            await eventually(lambda: manager.is_leg_established(call_id), "the answer", 10)
            manager.send_bye(call_id)
            ended = await asyncio.wait_for(manager.leg_finished(call_id), 10)
            assert isinstance(ended, LegEnded) and ended.cdr.error is None
        finally:
            await manager.close(timeout=1)

    try:
        asyncio.run(main())
        result = sipp.wait(15)
    finally:
        sipp.stop()
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    return result.messages


def invite_received(messages: str) -> tuple[str, str]:
    """(how SIPp got the INVITE, its top Via) from SIPp's message log."""
    match = re.search(r"(\w+) message received \[(\d+)\] bytes :\n\nINVITE [^\n]*\n(.*?)\n\n",
                      messages, re.S)  # fmt: skip
    assert match is not None, messages[-3000:]
    assert int(match.group(2)) > 1300
    via = next(line for line in match.group(3).splitlines() if line.lower().startswith("via:"))
    return match.group(1), via


def test_an_invite_over_1300_bytes_goes_over_tcp_with_a_tcp_via(tmp_path: Path) -> None:
    how, via = invite_received(big_invite_call("tcp", tmp_path, udp_only=False))
    assert how == "TCP"
    tcp_via = r"Via: SIP/2\.0/TCP 127\.0\.0\.1:\d+;branch=z9hG4bK\w+;rport(;alias)?$"
    assert re.match(tcp_via, via), via  # RFC 5923 alias: the core's TCP Via


def test_udp_only_keeps_a_big_invite_on_udp(tmp_path: Path) -> None:
    how, via = invite_received(big_invite_call("udp", tmp_path, udp_only=True))
    assert how == "UDP" and via.startswith("Via: SIP/2.0/UDP 127.0.0.1:")
