"""Cancel and hang up legs by correlation_id or Call-ID: the scheduler's call and the owner
worker's handler.

The scheduler side finds the leg in PostgreSQL. A dial message no worker has taken yet has no
leg: given its trunk, a cancel note is left in Redis (workers.coordination.cancel_notes) that
the worker taking the message honours, ending the leg as `cancelled` undialled. A leg still
queued is ended there (claimed first, so no worker dials it); a live leg's request goes to the
direct queue of the worker that owns it (a durable queue per worker node: a request sent while
that worker restarts waits for it), with an expiry, and the answer comes back through the
result backend. Unknown and finished legs get a result saying so; nothing raises for them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from celery.exceptions import TimeoutError as CeleryTimeout

from models import operations
from models.enums import TERMINAL_STATES, LegState
from models.legs import Leg
from sipstack.cdr import Disposition, HangupReason
from sipstack.errors import LocalProtocolError
from workers.celery.app import CONTROL_TASK, control_queue_name
from workers.contract.dial_message import message_leg_id
from workers.coordination.cancel_notes import leave_note
from workers.coordination.recovery import split_owner
from workers.events.stream import (
    EventPublisher,
    PostgresOutbox,
    StreamWriter,
)

if TYPE_CHECKING:
    from workers.client import DialClient
    from workers.runtime.worker import WorkerRuntime

ACTIONS = ("cancel", "hangup")


@dataclass(frozen=True, slots=True)
class ControlResult:
    """`result`: sent | answered | unknown | finished | ended_queued | queued | not_here |
    no_answer (`queued`: the message is not taken yet; the worker that takes it ends it)."""

    result: str
    detail: str
    leg_id: str | None = None
    call_id: str | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.result in ("sent", "ended_queued", "queued")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


find_leg = operations.find_leg


def request_control(
    client: DialClient,
    action: str,
    *,
    correlation_id: str | None = None,
    call_id: str | None = None,
    trunk: str | None = None,
    timeout: float = 10.0,
) -> ControlResult:
    """Cancel (unanswered legs only) or hang up (any live leg) one leg. With `trunk`, a
    correlation_id no worker has stored yet is cancelled ahead: result `queued`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r} (expected cancel or hangup)")
    which = f"correlation_id {correlation_id!r}" if correlation_id else f"call_id {call_id!r}"
    leg = client.repository.run(find_leg, correlation_id=correlation_id, call_id=call_id)
    if leg is None and correlation_id and trunk:
        leave_note(client.redis, client.settings, trunk, correlation_id, action)
        # Read again after the note is down: a worker that stored and claimed the leg before
        # this read may have missed the note, so the leg is then controlled like any other;
        # one that claims it later reads the note (it checks after its claim).
        leg = client.repository.run(find_leg, correlation_id=correlation_id)
        if leg is None:
            return ControlResult(
                "queued", f"{action} noted: the worker that takes the dial message ends it as "
                "cancelled without dialling", str(message_leg_id(trunk, correlation_id)))
    if leg is None:
        hint = "; give its trunk to cancel a dial message no worker has taken yet" if (
            correlation_id) else ""
        return ControlResult("unknown", f"no leg with {which}{hint}")
    return _control_leg(client, action, leg, timeout)


def _control_leg(client: DialClient, action: str, leg: Leg, timeout: float) -> ControlResult:
    leg_id = str(leg.id)
    if leg.state in TERMINAL_STATES:
        return ControlResult("finished", f"leg already {leg.state.value}", leg_id, leg.call_id,
                             leg.owner_worker)
    if leg.state == LegState.QUEUED:
        ended = end_queued_leg(client, leg, f"{action} requested before dialing")
        if ended:
            return ControlResult("ended_queued", "ended before it was dialed", leg_id)
        leg = client.repository.get_leg(leg_id) or leg  # a worker claimed it meanwhile
        if leg.state in TERMINAL_STATES:
            return ControlResult("finished", f"leg already {leg.state.value}", leg_id)
    if not leg.owner_worker:
        return ControlResult("unknown", f"leg {leg_id} has no owner worker", leg_id)
    node, _ = split_owner(leg.owner_worker)
    message = client.app.send_task(
        CONTROL_TASK,
        kwargs={"action": action, "worker": node, "leg_id": leg_id,
                "correlation_id": leg.correlation_id, "call_id": leg.call_id},
        queue=control_queue_name(node),
        expires=client.settings.control_expires,
        ignore_result=False,
    )
    try:
        answer = message.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
    except CeleryTimeout:
        return ControlResult(
            "no_answer",
            f"worker {node} did not answer within {timeout:.0f} s (if it is down, recovery "
            "ends the leg)",
            leg_id, leg.call_id, leg.owner_worker,
        )
    finally:
        message.forget()
    if not isinstance(answer, dict):
        return ControlResult("no_answer", f"worker {node} failed: {answer!r}", leg_id)
    if answer.get("result") == "not_here":  # it may have ended meanwhile (a cancel note)
        current = client.repository.get_leg(leg_id)
        if current is not None and current.state in TERMINAL_STATES:
            return ControlResult("finished", f"leg already {current.state.value}", leg_id,
                                 current.call_id, current.owner_worker)
    return ControlResult(
        str(answer.get("result")), str(answer.get("detail", "")), leg_id,
        answer.get("call_id") or leg.call_id, leg.owner_worker,
    )


def cancel(client: DialClient, **key: Any) -> ControlResult:
    return request_control(client, "cancel", **key)


def hangup(client: DialClient, **key: Any) -> ControlResult:
    return request_control(client, "hangup", **key)


def end_queued_leg(client: DialClient, leg: Leg, reason: str) -> bool:
    """End a leg no worker has claimed: claim it for the control client (so no worker can),
    then store its end, CDR and terminal event. False when a worker claimed it first."""
    from workers.runtime.book import LegBook, LegContext
    from workers.runtime.recorder import persist_batch

    controller = f"control@{uuid.uuid4().hex[:8]}"
    claimed = client.repository.claim_leg(worker=controller, leg_id=str(leg.id))
    if claimed is None:
        return False
    book = LegBook(controller)
    context = book.register(LegContext(
        leg_id=str(leg.id), trunk=leg.trunk, correlation_id=leg.correlation_id,
        scenario=str(leg.scenario.value), to_uri=leg.request_uri,
    ))
    pending = book.synthetic_end(
        context, at=time.time(), state="cancelled", reason=reason,
        disposition=Disposition.CANCELLED, hangup_reason=HangupReason.NORMAL,
    )
    keys = client.repository.run(persist_batch, [pending], controller)
    outbox = PostgresOutbox(client.repository, trunk=leg.trunk, workers=[controller])
    publisher = EventPublisher(StreamWriter(client.redis, client.settings), outbox)
    publisher.flush()
    publisher.publish([(keys[0], pending.event)])
    return True


# --- the owner worker's side -----------------------------------------------------------------


def handle_control(
    runtime: WorkerRuntime,
    action: str,
    *,
    leg_id: str | None = None,
    correlation_id: str | None = None,
    call_id: str | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Run a cancel/hangup on the signaling loop for a leg this worker owns."""
    if action not in ACTIONS:
        return {"result": "unknown", "detail": f"unknown action {action!r}"}

    def on_loop() -> dict[str, Any]:
        book = runtime.book
        context = (
            (book.find(correlation_id=correlation_id) if correlation_id else None)
            or (book.find(leg_id=leg_id) if leg_id else None)
            or (book.find(call_id=call_id) if call_id else None)
        )
        if context is None or context.finished:
            return {"result": "not_here", "detail": "this worker has no such live leg"}
        manager = runtime.signaling.manager
        target = context.call_id
        if not target:
            return {"result": "not_here", "detail": "the leg has no INVITE yet"}
        try:
            if action == "cancel":
                if manager.is_leg_established(target):
                    return {"result": "answered", "call_id": target,
                            "detail": "already answered; use hangup"}
                manager.send_cancel(target)
                return {"result": "sent", "call_id": target, "detail": "CANCEL sent"}
            established = manager.is_leg_established(target)
            manager.hangup(target)
            return {"result": "sent", "call_id": target,
                    "detail": "BYE sent" if established else "CANCEL sent"}
        except LocalProtocolError as error:
            return {"result": "not_here", "call_id": target, "detail": str(error)}

    try:
        return runtime.signaling.call(on_loop).result(timeout=timeout)
    except Exception as error:
        return {"result": "no_answer", "detail": f"signaling loop did not run it: {error}"}
