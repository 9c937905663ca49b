"""End to end with batched dial messages (`enqueue_dials` -> `outbound.dial_batch`): the same
guarantees as one message per call, and legs the trunk's CPS refuses wait, never drop."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from models.dial_fields import InvalidDialRequest
from tests.integration.test_worker_e2e import max_in_window
from tests.sipp.harness import requires_sipp
from tests.worker_stack import Stack, assert_complete_event_history
from workers.contract.queues import dial_message_queue_name

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]


def dials(stack: Stack, count: int, prefix: str) -> list[dict[str, str]]:
    return [{"to": f"sip:+1555{index:07d}@{stack.proxy}",
             "correlation_id": f"{prefix}-{index}-{uuid.uuid4().hex[:6]}"}
            for index in range(count)]


def test_batched_dials_each_get_one_call_one_cdr_and_ordered_events(
    tmp_path: Path, database_url: str
) -> None:
    stack = Stack(tmp_path, database_url)
    try:
        calls = 30
        carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=1000,
                             reason_cause="16")
        stack.configure_trunk(carrier)
        client = stack.client
        assert client is not None
        requested = dials(stack, calls, "b")
        queued = client.enqueue_dials(stack.trunk, requested, chunk_size=8)
        assert [q.correlation_id for q in queued] == [d["correlation_id"] for d in requested]
        # the same dials again: the same legs, dialled once
        again = client.enqueue_dials(stack.trunk, requested[:5], chunk_size=2)
        assert [a.leg_id for a in again] == [q.leg_id for q in queued[:5]]
        # a leg-id batch message for legs not stored yet: nothing to claim, nothing dialled
        client.publish_dial_batch(stack.trunk, [(q.leg_id, q.correlation_id)
                                                for q in queued[5:13]])
        stack.start_worker("w1@batch")
        leg_ids = [q.leg_id for q in queued]

        cdrs = stack.wait_cdrs(leg_ids, timeout=60)
        result = carrier.wait(timeout=30)
        assert result.stat("IncomingCall") == calls, result.explain()  # one INVITE each
        assert result.successful_calls == calls and result.failed_calls == 0
        assert {cdrs[leg][1] for leg in leg_ids} == {q.correlation_id for q in queued}
        assert {cdrs[leg][2] for leg in leg_ids} == {"answered"}
        stack.wait_states(leg_ids, {"ended"}, timeout=5)
        legs = stack.settled_events(leg_ids)
        assert set(legs) == set(leg_ids)
        assert_complete_event_history(legs, leg_ids)
    finally:
        stack.close()


def test_legs_a_batch_cannot_start_yet_wait_for_the_cps_window(
    tmp_path: Path, database_url: str
) -> None:
    stack = Stack(tmp_path, database_url, cps=4)
    try:
        calls = 12
        carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=200,
                             reason_cause="16")
        stack.configure_trunk(carrier)
        client = stack.client
        assert client is not None
        stack.start_worker("w1@batch-cps")
        queued = client.enqueue_dials(stack.trunk, dials(stack, calls, "cps"), chunk_size=calls)
        leg_ids = [q.leg_id for q in queued]
        cdrs = stack.wait_cdrs(leg_ids, timeout=60)
        assert {cdrs[leg][2] for leg in leg_ids} == {"answered"}
        invited = [float(row[0]) for row in stack.rows(
            "SELECT extract(epoch from invited_at) FROM legs")]
        spread = sorted(round(at - min(invited), 3) for at in invited)
        assert max_in_window(invited, 0.8) <= 4, spread
        assert max(invited) - min(invited) >= (calls / 4) - 1.2, spread  # waited, not dropped
        assert carrier.wait(timeout=30).successful_calls == calls
        assert_complete_event_history(stack.settled_events(leg_ids), leg_ids)
    finally:
        stack.close()


def test_enqueue_dials_checks_every_dial_before_publishing_any(
    tmp_path: Path, database_url: str
) -> None:
    stack = Stack(tmp_path, database_url)
    try:
        stack.configure_trunk(SimpleNamespace(port=5999))  # type: ignore[arg-type]
        client = stack.client
        assert client is not None
        good = dials(stack, 3, "v")
        with pytest.raises(InvalidDialRequest) as missing:
            client.enqueue_dials(stack.trunk, [*good, {"correlation_id": "no-target"}])
        assert missing.value.field == "dials[3].to"
        with pytest.raises(InvalidDialRequest) as bad:
            client.enqueue_dials(stack.trunk, [*good, {**good[0], "ring_timeout": -1}])
        assert missing.value.errors and bad.value.field == "dials[3].ring_timeout"
        assert stack.redis.llen(dial_message_queue_name(stack.trunk)) == 0
        with pytest.raises(ValueError, match="chunk_size"):
            client.enqueue_dials(stack.trunk, good, chunk_size=0)
    finally:
        stack.close()
