"""A 302 through the real worker: the leg follows the Contact to a second SIPp, is answered
there, and its CDR row lists the redirect (cdrs.redirects)."""

from __future__ import annotations

import pytest

from tests.sipp.harness import LOOPBACK, requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]


def test_a_followed_302_is_recorded_on_the_cdr(stack: Stack) -> None:
    answerer = stack.sipp("uas_answer.xml", 1)
    second_uri = f"sip:service@{LOOPBACK}:{answerer.port}"
    redirector = stack.sipp("uas_redirect_302.xml", 1, redirect_uri=second_uri)
    stack.configure_trunk(answerer)
    stack.start_worker("w1@redirect")
    first_hop = f"{LOOPBACK}:{redirector.port}"
    [queued] = stack.enqueue(1, prefix="moved", to_host=first_hop, signaling_addr=first_hop,
                             max_duration=1.0)

    stack.wait_cdrs([queued.leg_id], timeout=30)
    [(disposition, status, redirects)] = stack.rows(
        "SELECT disposition, final_status_code, redirects FROM cdrs WHERE leg_id = :leg",
        leg=queued.leg_id)
    assert (disposition, status, redirects) == ("answered", 200, second_uri)
    assert redirector.wait(timeout=15).successful_calls == 1
    assert answerer.wait(timeout=15).successful_calls == 1
    assert_complete_event_history(stack.settled_events([queued.leg_id]), [queued.leg_id])
