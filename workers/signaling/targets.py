"""RFC 3263 in the dial path: locate a trunk's proxy name on the signaling loop, send the
INVITE to the first target, and move the same leg to the next target on a failed attempt.

An attempt fails over (RFC 3263 §4.3) when, before any ringing or answer, it ends without a
final response (a transport error; Timer B) or with a 503 without Retry-After, or when
nothing at all (not even 100 Trying) came back within the trunk's `failover_timeout`, which
is shorter than Timer B: that attempt is dropped without signalling. The next target gets a
new INVITE (a new transaction and Call-ID). The failed attempt's events after `invited` and
its removal are kept from the worker, so the leg still has exactly one terminal event and
one CDR: the last attempt's. When no target is left, or the next INVITE cannot be sent, the
last attempt's terminal event goes through. `LegContext.targets` lists every target tried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sipstack.dial import DialRequest
from sipstack.errors import LocalProtocolError
from sipstack.events import LegEvent
from sipstack.locate import ServerTarget
from sipstack.uri import format_hostport
from workers.dns_locate import DnsLocator
from workers.runtime.book import LegContext
from workers.signaling.manager import LegManager

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Leg:
    context: LegContext
    request: DialRequest
    targets: tuple[ServerTarget, ...]
    index: int = 0
    call_id: str = ""
    heard: bool = False  # a response (any) came back for the current attempt
    abandon: bool = False  # the failover timer dropped the current attempt
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class TargetFailover:
    """Dials through located targets and hides failed attempts from the worker (loop only)."""

    def __init__(
        self, manager: Callable[[], LegManager], locator: DnsLocator, *, proxy: str,
        scheme: str, failover_timeout: float, on_event: Callable[[LegEvent], None],
        on_leg_removed: Callable[[str], None],
    ) -> None:
        self._manager = manager
        self._locator = locator
        self._proxy = proxy
        self._uri = f"{scheme}:{proxy}"
        self._failover_timeout = failover_timeout
        self._forward = on_event
        self._removed = on_leg_removed
        self._legs: dict[str, _Leg] = {}
        self._superseded: set[str] = set()  # Call-IDs of attempts that failed over
        self._tasks: set[asyncio.Task[None]] = set()
        self.failovers = 0

    async def dial(self, context: LegContext, request: DialRequest) -> str:
        """Locate the trunk's proxy (the locator's cache keeps answers for their TTL only)
        and send the INVITE to the first target."""
        if request.target.signaling_addr != self._proxy:  # the message named its own hop
            return await self._manager().dial(request)
        result = await self._locator.alocate(self._uri)
        if not result.targets:
            raise LocalProtocolError(f"RFC 3263: no server found for {self._uri}")
        return await self._send(_Leg(context, request, result.targets))

    async def _send(self, leg: _Leg) -> str:
        target = leg.targets[leg.index]
        hostport = format_hostport(*target.address)
        request = replace(
            leg.request, target=replace(leg.request.target, signaling_addr=hostport,
                                        transport=target.transport),
            call_id=leg.request.call_id if leg.index == 0 else "",
        )
        leg.context.targets.append(f"{target.transport.value}:{hostport}")
        leg.heard, leg.abandon = False, False
        # LegManager.dial does not suspend: the Call-ID is registered before any response
        # to this INVITE can be read
        call_id = leg.call_id = await self._manager().dial(request)
        self._legs[call_id] = leg
        if leg.index + 1 < len(leg.targets):
            loop = asyncio.get_running_loop()
            leg.timer = loop.call_later(self._failover_timeout, self._timed_out, leg, call_id)
        return call_id

    def _timed_out(self, leg: _Leg, call_id: str) -> None:
        leg.timer = None
        if leg.call_id != call_id or leg.heard:
            return
        log.info("no response from %s within %.1f s: next target", leg.context.targets[-1],
                 self._failover_timeout)
        leg.abandon = True
        self._manager().drop_leg(call_id)  # its terminal event comes back through on_event

    def on_event(self, event: LegEvent) -> None:
        if event.call_id in self._superseded:
            return
        leg = self._legs.get(event.call_id)
        if leg is None:
            self._forward(event)
            return
        if event.state != "invited":
            leg.heard = True
            if leg.timer is not None:
                leg.timer.cancel()
                leg.timer = None
        if event.terminal:
            del self._legs[event.call_id]
            if leg.index + 1 < len(leg.targets) and (leg.abandon or fails_over(event)):
                self._superseded.add(event.call_id)
                # out of the core's event dispatch: the next INVITE is a new dial
                task = asyncio.get_running_loop().create_task(self._next(leg, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
        self._forward(event)

    async def _next(self, leg: _Leg, failed: LegEvent) -> None:
        leg.index += 1
        self.failovers += 1
        try:
            await self._send(leg)
        except Exception as error:  # the leg still ends, with the failed attempt's end
            log.warning("next target not dialled: %s", error)
            self._forward(failed)

    def on_leg_removed(self, call_id: str) -> None:
        if call_id in self._superseded:
            self._superseded.discard(call_id)
            return
        self._removed(call_id)


def fails_over(event: LegEvent) -> bool:
    """RFC 3263 §4.3: no final response (transport error, timeout) or a 503 without
    Retry-After, and nothing from the callee's side before it (no ringing, no answer)."""
    cdr = getattr(event, "cdr", None)
    if event.state != "failed" or cdr is None:
        return False
    if cdr.answered_at is not None or cdr.first_provisional_at is not None:
        return False
    status = cdr.final_status_code
    return status is None or (status == 503 and cdr.retry_after is None)
