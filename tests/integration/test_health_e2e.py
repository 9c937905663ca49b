"""OPTIONS health checks end to end: an `outbound worker` pings its trunk's proxy (SIPp
answering OPTIONS); when the proxy stops answering, the trunk goes down after N misses
(stream record, gauge) and dials end at once as `failed` / congestion without an INVITE;
once it answers again the trunk is up after M successes and dials flow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.test_pressure_e2e import gauge, trunk_records
from tests.sipp.harness import Sipp, free_ports, requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history
from tests.workers_harness import wait_for

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]

HEALTH_KEYS = (
    "health_check = true\nhealth_interval = 0.2\nhealth_timeout = 0.3\n"
    "health_down_after = 2\nhealth_up_after = 2\nhealth_stale_after = 30\n"
)


def test_a_trunk_whose_proxy_stops_answering_options_refuses_dials_fast_then_recovers(
    tmp_path: Path, database_url: str
) -> None:
    stack = Stack(tmp_path, database_url)
    proxy_port = free_ports(1)

    def options_responder(run: int) -> Sipp:
        process = Sipp("uas_options.xml", proxy_port, "udp", tmp_path / f"options-{run}",
                       calls=100_000)
        stack.sipps.append(process)
        return process.start()

    try:
        proxy = options_responder(1)
        callee = stack.sipp("uas_answer_remote_bye.xml", 8, hold_ms=100, reason_cause="16")
        stack.configure_trunk(proxy, HEALTH_KEYS)
        metrics = free_ports(1)
        stack.start_worker("w1@health", metrics_port=metrics)
        callee_addr = f"127.0.0.1:{callee.port}"  # INVITEs go there, pings to the proxy

        def dial(prefix: str) -> list[str]:
            queued = stack.enqueue(4, prefix=prefix, to_host=callee_addr,
                                   signaling_addr=callee_addr)
            return [q.leg_id for q in queued]

        health_key = stack.settings.key("health", stack.trunk)
        wait_for(lambda: int(stack.redis.hget(health_key, "successes") or 0) >= 2, 30,
                 "two answered pings")
        assert gauge(metrics, "outbound_trunk_up") == 1.0
        before = dial("up")
        cdrs = stack.wait_cdrs(before, timeout=30)
        assert {cdrs[leg][2] for leg in before} == {"answered"}

        proxy.stop()
        stopped_at = time.time()
        wait_for(lambda: any(r["state"] == "trunk_down" for r in trunk_records(stack).values()),
                 30, "the trunk_down record")
        down_after = time.time() - stopped_at
        assert gauge(metrics, "outbound_trunk_up") == 0.0
        (down,) = [r for r in trunk_records(stack).values() if r["state"] == "trunk_down"]
        assert (down["misses"], down["status_code"]) == ("2", "")

        enqueued_at = time.time()
        refused = dial("down")
        cdrs = stack.wait_cdrs(refused, timeout=30)
        refused_in = time.time() - enqueued_at
        for leg in refused:
            disposition, reason, status = cdrs[leg][2], cdrs[leg][5], cdrs[leg][6]
            assert (disposition, status) == ("congestion", None)
            assert reason == f"trunk {stack.trunk} is down (OPTIONS health check): not dialled"
        assert refused_in < 5  # not an INVITE that waits for Timer B (32 s) or the ring timer
        refused_events = stack.settled_events(refused)
        for leg in refused:
            assert [e.state for e in refused_events[leg]] == ["failed"]

        options_responder(2)
        revived_at = time.time()
        wait_for(lambda: any(r["state"] == "trunk_up" for r in trunk_records(stack).values()),
                 30, "the trunk_up record")
        up_after = time.time() - revived_at
        (up,) = [r for r in trunk_records(stack).values() if r["state"] == "trunk_up"]
        assert (up["successes"], up["status_code"]) == ("2", "200")
        assert gauge(metrics, "outbound_trunk_up") == 1.0
        after = dial("again")
        cdrs = stack.wait_cdrs(after, timeout=30)
        assert {cdrs[leg][2] for leg in after} == {"answered"}

        result = callee.wait(timeout=30)  # the refused dials never reached the callee
        assert result.stat("IncomingCall") == 8 and result.successful_calls == 8
        every = before + refused + after
        assert_complete_event_history(stack.settled_events(every), every)
        print(f"down {down_after:.2f} s after the proxy stopped, 4 dials refused in "
              f"{refused_in:.2f} s, up {up_after:.2f} s after it was back")
    finally:
        stack.close()
