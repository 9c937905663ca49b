"""RFC 3263 in the dial path, end to end: a real worker whose trunk proxy is a domain served
by dnsmasq on loopback (SRV records), a primary target that is down or answers 503, and a
secondary SIPp that answers: every call completes through the secondary, within the trunk's
failover timer, as one leg with one CDR and one terminal event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnsmasq import Dnsmasq
from tests.sipp.harness import LOOPBACK, free_ports, requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history
from tests.workers_harness import wait_for

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]

D = "carrier.test"
FAILOVER_TIMEOUT = 1.0


def _records(primary: int, secondary: int) -> list[str]:
    return [
        f"--srv-host=_sip._udp.{D},primary.{D},{primary},10,0",
        f"--srv-host=_sip._udp.{D},secondary.{D},{secondary},20,0",
        f"--host-record=primary.{D},{LOOPBACK}",
        f"--host-record=secondary.{D},{LOOPBACK}",
    ]


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, D, [], ttl=5)
    yield server
    server.stop()


def _located_trunk(stack: Stack, dns: Dnsmasq) -> None:
    stack.write_trunks(
        f'[trunks.{stack.trunk}]\nproxy = "{D}"\nlocate = true\n'
        f"failover_timeout = {FAILOVER_TIMEOUT}\ncps = 50\n"
        'caller_user = "+15550100"\n'
    )
    stack.proxy = D
    stack.env["OUTBOUND_DNS_NAMESERVER"] = dns.nameserver
    stack.start_worker("w1@locate")


@pytest.mark.parametrize("primary", ["down", "503"])
def test_every_call_completes_through_the_secondary_target(
    stack: Stack, dns: Dnsmasq, primary: str
) -> None:
    calls = 4
    secondary = stack.sipp("uas_answer.xml", calls)
    if primary == "down":
        primary_port = free_ports(1)  # nothing listens: no response at all
    else:
        primary_port = stack.sipp("uas_reject_503.xml", calls).port
    dns.records = _records(primary_port, secondary.port)
    dns.start()
    _located_trunk(stack, dns)
    queued = stack.enqueue(calls, max_duration=0.5)
    leg_ids = [q.leg_id for q in queued]

    wait_for(lambda: len(_cdrs(stack)) >= calls, 60, "the CDRs")
    cdrs = _cdrs(stack)
    result = secondary.wait(timeout=30)
    assert result.successful_calls == calls, result.explain()
    assert len(cdrs) == calls  # one CDR per leg: the failed attempts have none of their own
    tried = f"udp:{LOOPBACK}:{primary_port} udp:{LOOPBACK}:{secondary.port}"
    for leg in leg_ids:
        assert cdrs[leg] == ("answered", "user", tried)
    legs = stack.settled_events(leg_ids)
    assert_complete_event_history(legs, leg_ids)
    for leg in leg_ids:
        history = legs[leg]
        invited = [e for e in history if e.state == "invited"]
        established = next(e for e in history if e.state == "established")
        # the first INVITE went to the primary; the secondary answered within the timer
        assert len(invited) == 2
        assert established.at - invited[0].at < FAILOVER_TIMEOUT + 1.5
        terminal = history[-1]
        assert terminal.outcome is not None and terminal.outcome["routed_via"] == tried


def _cdrs(stack: Stack) -> dict[str, tuple[str, str, str]]:
    rows = stack.rows("SELECT leg_id, disposition, outcome, routed_via FROM cdrs")
    return {str(row[0]): (row[1], row[2], row[3]) for row in rows}


def test_a_busy_answer_from_the_first_target_is_final(stack: Stack, dns: Dnsmasq) -> None:
    busy = stack.sipp("uas_busy.xml", 1)
    secondary = stack.sipp("uas_answer.xml", 1)
    dns.records = _records(busy.port, secondary.port)
    dns.start()
    _located_trunk(stack, dns)
    queued = stack.enqueue(1, max_duration=0.5)
    wait_for(lambda: len(_cdrs(stack)) >= 1, 30, "the CDR")
    assert _cdrs(stack)[queued[0].leg_id] == ("busy", "user", f"udp:{LOOPBACK}:{busy.port}")
    assert busy.wait(timeout=10).successful_calls == 1
    secondary.stop()
    assert secondary.result().stat("IncomingCall") == 0  # never dialled after the 486
