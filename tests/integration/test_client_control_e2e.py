"""The scheduler's client against a real worker: cancel and hang up by correlation_id or
Call-ID, clear results for unknown, finished and queued legs, and the max call duration."""

from __future__ import annotations

import pytest

from tests.sipp.harness import requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history
from workers.client import DialClient
from workers.coordination.control import cancel, hangup

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]


def test_cancel_and_hangup_reach_the_owner_and_say_what_happened(stack: Stack) -> None:
    answering = stack.sipp("uas_answer.xml", 3)  # answers, waits for our BYE
    ringing = stack.sipp("uas_ring_cancel.xml", 1)
    stack.configure_trunk(answering)
    client = stack.client
    assert isinstance(client, DialClient)
    stack.start_worker("w1@control")
    up = stack.enqueue(2, prefix="up")
    timed = stack.enqueue(1, prefix="timed", max_duration=1.0)[0]
    ring_addr = f"127.0.0.1:{ringing.port}"
    rung = stack.enqueue(1, prefix="ring", to_host=ring_addr, signaling_addr=ring_addr)[0]
    stack.wait_states([q.leg_id for q in up], {"established"}, timeout=30)
    stack.wait_states([rung.leg_id], {"ringing"}, timeout=30)

    by_correlation = hangup(client, correlation_id=up[0].correlation_id)
    assert (by_correlation.result, by_correlation.detail) == ("sent", "BYE sent")
    assert by_correlation.worker is not None and by_correlation.worker.startswith("w1@control#")

    call_id = stack.rows("SELECT call_id FROM legs WHERE id = :id", id=rung.leg_id)[0][0]
    cancelled = cancel(client, call_id=call_id)
    assert (cancelled.result, cancelled.detail) == ("sent", "CANCEL sent")

    refused = cancel(client, correlation_id=up[1].correlation_id)
    assert refused.result == "answered" and "use hangup" in refused.detail
    assert hangup(client, call_id=refused.call_id).result == "sent"

    cdrs = stack.wait_cdrs([up[0].leg_id, up[1].leg_id, rung.leg_id, timed.leg_id], timeout=30)
    assert cdrs[up[0].leg_id][2:4] == ("answered", "local")
    assert cdrs[rung.leg_id][2:4] == ("cancelled", "local")
    # the trunk's or the request's max call duration ends an answered call with our BYE
    assert cdrs[timed.leg_id][2:4] == ("answered", "local")
    billsec = stack.rows("SELECT billsec FROM cdrs WHERE leg_id = :id", id=timed.leg_id)[0][0]
    assert billsec in (1, 2)

    finished = hangup(client, correlation_id=up[0].correlation_id)
    assert finished.result == "finished" and finished.detail == "leg already ended"
    unknown = cancel(client, correlation_id="never-enqueued")
    assert unknown.result == "unknown" and "never-enqueued" in unknown.detail

    # a leg nobody has dialed yet is ended where it waits, and no worker dials it later
    queued, _ = stack.repository.create_leg({
        "correlation_id": "waiting", "trunk": stack.trunk,
        "request_uri": f"sip:+1888@{stack.proxy}"})
    early = cancel(client, correlation_id="waiting")
    assert early.result == "ended_queued"
    client.publish_dial(str(queued.id), stack.trunk, "waiting")
    cdrs = stack.wait_cdrs([str(queued.id)], timeout=10)
    assert cdrs[str(queued.id)][2] == "cancelled"
    leg_ids = [q.leg_id for q in (*up, timed, rung)] + [str(queued.id)]
    assert_complete_event_history(stack.settled_events(leg_ids), leg_ids)
    assert answering.wait(timeout=20).successful_calls == 3
    assert stack.leg_states()[str(queued.id)] == "ended"
