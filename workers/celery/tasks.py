"""The Celery tasks: thin wrappers that hand dials and control requests to the runtime."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Reject

from workers.celery.app import CONTROL_TASK, DIAL_BATCH_TASK, DIAL_TASK, app
from workers.celery.current import current_runtime
from workers.coordination.control import handle_control
from workers.observability.log_format import call_context

log = logging.getLogger(__name__)

_DIAL_OPTIONS: dict[str, Any] = {
    "bind": True, "acks_late": True, "ignore_result": True, "max_retries": None,
}


@app.task(name=DIAL_TASK, **_DIAL_OPTIONS)  # type: ignore[untyped-decorator]
def dial(
    self: Task,
    leg_id: str,
    trunk: str,
    correlation_id: str = "",
    enqueued_at: float | None = None,
) -> str:
    """Claim the leg and hand it to the signaling loop; returns in milliseconds."""
    runtime = current_runtime()
    if runtime is None:
        raise Reject("this process runs no signaling runtime", requeue=True)
    outcome = runtime.handle_dial(leg_id, trunk, correlation_id, enqueued_at)
    if outcome.status == "retry":
        # the trunk's limits (or a server) say later: the request waits, it is not dropped
        raise self.retry(countdown=outcome.retry_after, max_retries=None)
    if outcome.status == "requeue":
        raise Reject(outcome.detail, requeue=True)
    return outcome.status


@app.task(name=DIAL_BATCH_TASK, **_DIAL_OPTIONS)  # type: ignore[untyped-decorator]
def dial_batch(
    self: Task, trunk: str, legs: list[list[str]], enqueued_at: float | None = None
) -> dict[str, int]:
    """`dial` for several legs of one trunk ([leg_id, correlation_id] pairs): one message,
    one limits check, one claim. Legs the limits refuse go back as a smaller message."""
    runtime = current_runtime()
    if runtime is None:
        raise Reject("this process runs no signaling runtime", requeue=True)
    outcome = runtime.handle_dial_batch(trunk, [(leg[0], leg[1]) for leg in legs], enqueued_at)
    if outcome.requeue:
        raise Reject(outcome.requeue, requeue=True)
    if outcome.retry:
        # published before this message is acknowledged: no leg is dropped in between
        raise self.retry(
            kwargs={"trunk": trunk, "legs": [list(leg) for leg in outcome.retry],
                    "enqueued_at": enqueued_at},
            countdown=outcome.retry_after, max_retries=None,
        )
    return outcome.summary()


@app.task(name=CONTROL_TASK, acks_late=False, ignore_result=False)  # type: ignore[untyped-decorator]
def control(
    action: str,
    worker: str,
    leg_id: str | None = None,
    correlation_id: str | None = None,
    call_id: str | None = None,
) -> dict[str, Any]:
    """Cancel or hang up a leg this worker owns (arrives on the worker's direct queue)."""
    runtime = current_runtime()
    if runtime is None:
        return {"result": "no_answer", "detail": f"worker {worker} is not running a runtime"}
    context = (runtime.book.find(correlation_id=correlation_id) if correlation_id else None) or (
        runtime.book.find(call_id=call_id) if call_id else None)
    with call_context(
        trunk=runtime.trunk.name, leg_id=leg_id or (context.leg_id if context else None),
        correlation_id=correlation_id or (context.correlation_id if context else None),
        call_id=call_id or (context.call_id if context else None),
    ):
        result = handle_control(
            runtime, action, leg_id=leg_id, correlation_id=correlation_id, call_id=call_id
        )
        with call_context(call_id=result.get("call_id")):
            log.info("%s asked: %s (%s)", action, result["result"], result.get("detail", ""))
    return result
