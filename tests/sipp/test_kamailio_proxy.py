"""Calls through a real Kamailio 5.6 Record-Route proxy over TCP and TLS, SIPp behind it over
UDP.

A stock Kamailio closes a TCP connection idle for `tcp_connection_lifetime` (120 s by default);
here the lifetime is 3 s and each call outlives it twice. The call must survive the close
(RFC 3261 §18: a connection is no part of a dialog's state): the far end's BYE comes back
through the proxy on a connection the proxy opens to our Contact, ours goes out on a new one.
With CRLF keep-alives (RFC 5626 §3.5.1) the proxy never finds the connection idle at all.
Together these show a call through a stock Kamailio over TCP lasts as long as it is meant to:
nothing in the mechanism depends on the lifetime's length.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sipstack.cdr import HangupBy, HangupReason
from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import LegEnded
from sipstack.transport import Transport
from tests.sipp.harness import (  # noqa: F401  (test_pki: a fixture)
    LOOPBACK,
    Sipp,
    TestPki,
    free_ports,
    requires_sipp,
    test_pki,
)
from tests.sipp.kamailio import Kamailio
from tests.waiting import eventually
from workers.signaling.manager import LegManager
from workers.signaling.transports import TransportConfig

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(90), requires_sipp]

LIFETIME = 3
# Kamailio closes an idle connection some seconds after the lifetime (its reader process holds
# a connection a while before tcp_main's timer looks at it): about 11 s here with 3 s.
IDLE_CLOSE_BY = LIFETIME + 12
HOLD = IDLE_CLOSE_BY + 1.0  # the call outlives the proxy's idle close


def start_proxy_and_far_end(
    tmp_path: Path, scenario: str, *extra: str, pki: TestPki | None = None,
    accept_aliases: bool = False,
) -> tuple[Kamailio, Sipp]:
    base = free_ports(3)
    sipp = Sipp(scenario, base + 1, "udp", tmp_path / "sipp", keys={
        "adv_host": LOOPBACK, "adv_port": str(base + 1), "adv_transport": "udp",
        "reason_cause": "16",
    }, extra_args=extra)  # fmt: skip
    sipp.start()
    proxy = Kamailio(base, f"{LOOPBACK}:{base + 1}", tmp_path / "kamailio", lifetime=LIFETIME,
                     pki=pki, tls_port=base + 2 if pki else None,
                     accept_aliases=accept_aliases)  # fmt: skip
    try:
        proxy.start()
    except Exception:
        sipp.stop()
        raise
    return proxy, sipp


def through(proxy: Kamailio, transport: Transport = Transport.TCP) -> DialRequest:
    if transport is Transport.TLS:  # by name, so that the proxy's certificate is checked
        uri, address = f"sips:service@localhost:{proxy.tls_port}", f"localhost:{proxy.tls_port}"
    else:
        uri = f"sip:service@{LOOPBACK}:{proxy.port};transport=tcp"
        address = f"{LOOPBACK}:{proxy.port}"
    return DialRequest(
        target=DialTarget(request_uri=uri, signaling_addr=address, transport=transport),
        correlation_id="kamailio-1",
    )


def transport_config(transport: Transport, pki: TestPki, **more: Any) -> TransportConfig:
    """Ours; over TLS with a TLS listener, as the worker has when its trunk has a cert."""
    if transport is Transport.TCP:
        return TransportConfig(bind_host=LOOPBACK, **more)
    return TransportConfig(
        bind_host=LOOPBACK, tls_ca_file=str(pki.ca_file), tls_server_cert_file=str(pki.cert_file),
        tls_server_key_file=str(pki.key_file), **more,
    )


async def established_call(
    manager: LegManager, proxy: Kamailio, transport: Transport = Transport.TCP
) -> tuple[str, float]:
    call_id = await manager.dial(through(proxy, transport))
    await eventually(lambda: manager.is_leg_established(call_id), "the answer", timeout=10)
    return call_id, asyncio.get_running_loop().time()


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.TLS])
@pytest.mark.parametrize("who_hangs_up", ["far end", "we"])
def test_a_call_outlives_the_proxys_idle_close_of_its_connection(
    tmp_path: Path, who_hangs_up: str, transport: Transport, test_pki: TestPki,  # noqa: F811
) -> None:
    far_bye = who_hangs_up == "far end"
    scenario = "uas_proxied_remote_bye.xml" if far_bye else "uas_proxied_answer.xml"
    proxy, sipp = start_proxy_and_far_end(tmp_path, scenario, "-d", str(int(HOLD * 1000)),
                                          pki=test_pki)  # fmt: skip

    async def main() -> LegEnded:
        manager = LegManager(CoreConfig(), transport_config(transport, test_pki))
        await manager.start()
        stats = manager.transports.stats
        try:
            call_id, answered = await established_call(manager, proxy, transport)
            finished = manager.leg_finished(call_id)
            await eventually(lambda: stats.connections_lost >= 1, "the proxy's idle close",
                             timeout=IDLE_CLOSE_BY)  # fmt: skip
            assert manager.is_leg_established(call_id) and not finished.done()
            opened = stats.connections_opened
            if not far_bye:
                await eventually(lambda: asyncio.get_running_loop().time() - answered >= HOLD,
                                 "the hold", timeout=HOLD + 1, interval=0.05)  # fmt: skip
                manager.send_bye(call_id)
            ended = await asyncio.wait_for(finished, HOLD + 10)
            assert isinstance(ended, LegEnded)
            if far_bye:  # the proxy opened a connection to our Contact for the far end's BYE
                assert stats.inbound_accepted >= 1
            else:  # our BYE opened a new connection to the proxy
                assert stats.connections_opened == opened + 1
            return ended
        finally:
            await manager.close(timeout=1)

    try:
        ended = asyncio.run(main())
        result = sipp.wait(15)
    finally:
        sipp.stop()
        proxy.stop()
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    cdr = ended.cdr
    assert cdr.error is None, cdr
    assert cdr.hangup_by is (HangupBy.REMOTE if far_bye else HangupBy.LOCAL)
    assert cdr.hangup_reason is HangupReason.NORMAL
    assert cdr.answered_at is not None and cdr.ended_at is not None
    assert cdr.ended_at - cdr.answered_at >= HOLD - 0.5
    assert cdr.billsec == math.floor(cdr.ended_at - cdr.answered_at + 0.5)


def test_crlf_keepalives_keep_the_proxy_from_closing_the_connection(tmp_path: Path) -> None:
    proxy, sipp = start_proxy_and_far_end(tmp_path, "uas_proxied_answer.xml")

    async def main() -> tuple[LegEnded, dict[str, int]]:
        config = TransportConfig(bind_host=LOOPBACK, keepalive_interval=1.0)
        manager = LegManager(CoreConfig(), config)
        await manager.start()
        stats = manager.transports.stats
        try:
            call_id, answered = await established_call(manager, proxy)
            loop = asyncio.get_running_loop()
            # Longer than the proxy takes to close an idle connection: still the one
            # connection, pinged and answered all along.
            await eventually(lambda: loop.time() - answered >= IDLE_CLOSE_BY + 1,
                             "the proxy's idle close time", timeout=IDLE_CLOSE_BY + 2,
                             interval=0.05)  # fmt: skip
            assert stats.connections_lost == 0 and stats.connections_opened == 1
            assert stats.stream_pongs_received >= stats.stream_pings_sent - 1 >= 1
            manager.send_bye(call_id)
            ended = await asyncio.wait_for(manager.leg_finished(call_id), 10)
            assert isinstance(ended, LegEnded)
            return ended, {
                "pings": stats.stream_pings_sent, "opened": stats.connections_opened,
                "lost": stats.connections_lost,
            }
        finally:
            await manager.close(timeout=1)

    try:
        ended, counters = asyncio.run(main())
        result = sipp.wait(15)
    finally:
        sipp.stop()
        proxy.stop()
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    assert ended.cdr.error is None and ended.cdr.hangup_by is HangupBy.LOCAL
    assert counters["lost"] == 0 and counters["opened"] == 1
    assert counters["pings"] >= IDLE_CLOSE_BY // 2


def outbound_call(proxy: Kamailio, pki: TestPki, *options: str) -> tuple[int, dict[str, Any]]:
    """`outbound call` over TLS through the proxy, as a user runs it: (exit code, its CDR)."""
    args = [
        sys.executable, "-m", "cli.main", "call", f"sips:service@localhost:{proxy.tls_port}",
        "--proxy", f"localhost:{proxy.tls_port}", "--bind", f"{LOOPBACK}:0",
        "--tls-ca", str(pki.ca_file), "--hold", "30", "--json", *options,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    cdrs = [json.loads(line) for line in done.stdout.splitlines() if '"type":"cdr"' in line]
    assert len(cdrs) == 1, done.stdout + done.stderr
    return done.returncode, cdrs[0]


def assert_remote_bye(code: int, cdr: dict[str, Any], sipp: Sipp, hold: float) -> None:
    result = sipp.wait(20)
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    assert code == 0, cdr
    assert (cdr["hangup_by"], cdr["hangup_reason"], cdr["error"]) == ("remote", "normal", None)
    answered_for = cdr["ended_at"] - cdr["answered_at"]
    assert hold - 0.2 <= answered_for < 30  # the far end's BYE, not our --hold
    assert cdr["billsec"] == math.floor(answered_for + 0.5)


@pytest.mark.parametrize("listener", ["--tls-listen", "no listener (;alias)"])
def test_a_far_end_bye_over_tls_reaches_outbound_call(
    tmp_path: Path, listener: str, test_pki: TestPki,  # noqa: F811
) -> None:
    """RFC 3261 §8.1.1.8, §18.2.1: the proxy sends the far end's BYE to our Contact (a TLS
    listener of ours), or over our own connection when our Via says ;alias (RFC 5923) and
    we have no listener. Never to another transport's port, where TLS cannot work."""
    hold = 2.0
    with_listener = listener == "--tls-listen"
    proxy, sipp = start_proxy_and_far_end(
        tmp_path, "uas_proxied_remote_bye.xml", "-d", str(int(hold * 1000)), pki=test_pki,
        accept_aliases=not with_listener,
    )
    options = ["--tls-cert", str(test_pki.cert_file), "--tls-key", str(test_pki.key_file),
               "--tls-listen", f"{LOOPBACK}:0"] if with_listener else []  # fmt: skip
    try:
        code, cdr = outbound_call(proxy, test_pki, *options)
        assert_remote_bye(code, cdr, sipp, hold)
    finally:
        sipp.stop()
        proxy.stop()
