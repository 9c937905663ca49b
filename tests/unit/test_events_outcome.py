"""Terminal stream events say how the call ended (disposition, hangup, final status, Reason):
a ring timeout and an operator's cancel both end `cancelled 487`, and only these tell them
apart."""

from __future__ import annotations

import uuid

from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.events import LegCancelled
from workers.events.stream import StreamEvent
from workers.runtime.book import LegBook, LegContext


def _cancelled(context: LegContext, disposition: Disposition, cause: int) -> LegCancelled:
    cdr = CdrRecord(
        call_id=context.call_id, correlation_id=context.correlation_id, scenario="campaign",
        trunk="t1", from_uri="sip:a@h", to_uri="sip:b@h", started_at=1.0,
        first_provisional_at=2.0, answered_at=None, ended_at=6.0, final_status_code=487,
        disposition=disposition,
        hangup_reason=(
            HangupReason.TIMER_EXPIRED if disposition is Disposition.NO_ANSWER
            else HangupReason.NORMAL
        ),
        hangup_by=HangupBy.LOCAL, reason_protocol="Q.850", reason_cause=cause,
        reason_text="x",
    )
    return LegCancelled(
        call_id=context.call_id, correlation_id=context.correlation_id, scenario="campaign",
        at=6.0, status_code=487, reason="Request Terminated", cdr=cdr,
    )


def test_terminal_stream_events_carry_the_outcome_and_round_trip() -> None:
    book = LegBook("w1", trunk="t1")
    seen = {}
    for disposition, cause in ((Disposition.NO_ANSWER, 19), (Disposition.CANCELLED, 16)):
        context = book.register(LegContext(
            leg_id=str(uuid.uuid4()), trunk="t1", correlation_id=f"k-{uuid.uuid4().hex[:6]}",
            scenario="campaign", to_uri="sip:b@h",
        ))
        context.call_id = f"{uuid.uuid4().hex}@h"
        pending = book.pending_for(_cancelled(context, disposition, cause))
        assert pending is not None
        fields = pending.event.fields()
        seen[disposition] = fields
        assert StreamEvent.from_fields(fields) == pending.event
        assert StreamEvent.from_json(pending.event.to_json()) == pending.event
    ring, cancel = seen[Disposition.NO_ANSWER], seen[Disposition.CANCELLED]
    assert (ring["state"], ring["status_code"]) == (cancel["state"], cancel["status_code"])
    assert ring["disposition"] == "no_answer" and cancel["disposition"] == "cancelled"
    assert ring["hangup_reason"] == "timer_expired" and cancel["hangup_reason"] == "normal"
    assert ring["hangup_by"] == cancel["hangup_by"] == "local"
    assert ring["final_status_code"] == "487"
    assert (ring["reason_protocol"], ring["reason_cause"]) == ("Q.850", "19")
    assert cancel["reason_cause"] == "16"
