"""LegManager: the asyncio shell that drives the sans-IO UacCore over real transports.

One event loop owns the core and the sockets. Every input (bytes, a lost connection, the timer,
an API call) is handed to the core with `now = time.time()`; afterwards everything the core
wants sent goes out, its events go to the hooks, and the one timer is re-armed to the core's
next deadline. SignalingService runs a LegManager on its own thread for Celery's threads.

Over 500 lines: LegManager is the reference Manager's whole API (dial, cancel, BYE, drop,
cleanup, the hooks and their subscribers) around one core, and SignalingService is the thin
thread-safe face of that same object.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest
from sipstack.dialog import DialogSnapshot
from sipstack.errors import LocalProtocolError
from sipstack.events import (
    AnswerReceived,
    CallIdAdopted,
    CoreEvent,
    DialogEstablished,
    LegEvent,
    TerminalEvent,
)
from sipstack.reason import LocalHangup
from sipstack.transport import Address, Transport
from sipstack.uac import UacCore
from sipstack.uri import format_hostport
from workers.observability.log_format import call_fields
from workers.signaling.transports import TransportConfig, Transports

_T = TypeVar("_T")
TransportKey = tuple[Transport, Address]
# Takes a message before the leg core does (a REGISTER binding's responses); True: taken.
Receiver = Callable[[bytes, Address, Transport], bool]

# Unreadable messages from the network: the first few are logged, then one in every so many,
# so a flood of garbage cannot flood the log (the core counts every one of them).
BAD_INPUT_LOG_FIRST = 10
BAD_INPUT_LOG_EVERY = 1000


NotificationHook = Literal[
    "on_event", "on_established", "on_dialog_call_id_adopted", "on_signaling_sent",
    "on_signaling_received", "on_leg_removed",
]
_NOTIFICATION_HOOKS: frozenset[str] = frozenset(get_args(NotificationHook))


@dataclass(slots=True)
class ManagerHooks:
    """Callbacks run on the manager's loop; an exception in one is logged, never propagated.

    Hooks must not block: hand slow work (PostgreSQL, Redis) to a thread or another task.
    `pre_ack` runs after a 2xx and before the ACK; raising from it aborts the leg.
    `on_leg_removed` runs exactly once per leg, after its terminal event (or a drop).

    Each notification hook (every one but `pre_ack`, which is a gate) takes several
    subscribers: the one given here runs first, then those added with `subscribe`, in order
    (the worker's own hooks, then metrics). Nobody replaces or wraps another's hook.
    """

    on_event: Callable[[LegEvent], None] | None = None
    on_established: Callable[[DialogEstablished], None] | None = None
    on_dialog_call_id_adopted: Callable[[str, str, str], None] | None = None
    on_signaling_sent: Callable[[bytes, Transport, Address], None] | None = None
    on_signaling_received: Callable[[bytes, Transport, Address], None] | None = None
    pre_ack: Callable[[AnswerReceived], Awaitable[None]] | None = None
    on_leg_removed: Callable[[str], None] | None = None
    _subscribers: dict[str, tuple[Callable[..., None], ...]] = field(
        default_factory=dict, repr=False
    )

    def subscribe(self, hook: NotificationHook, callback: Callable[..., None]) -> None:
        """Add a subscriber to `hook` (call on the manager's loop, or before it runs)."""
        if hook not in _NOTIFICATION_HOOKS:
            raise ValueError(f"no notification hook {hook!r}; one of {sorted(_NOTIFICATION_HOOKS)}")
        self._subscribers[hook] = (*self._subscribers.get(hook, ()), callback)

    def subscribers(self, hook: NotificationHook) -> tuple[Callable[..., None], ...]:
        """Who runs for `hook`, in order."""
        first: Callable[..., None] | None = getattr(self, hook)
        added = self._subscribers.get(hook, ())
        return added if first is None else (first, *added)


@dataclass(slots=True)
class ManagerStats:
    hook_errors: int = 0
    core_errors: int = 0  # the core raised on network input (a core bug; counted, not fatal)
    pre_ack_failures: int = 0
    timer_fires: int = 0


class _Sampler:
    """Says yes to the first `first` occurrences, then to every `every`-th one."""

    __slots__ = ("count", "every", "first")

    def __init__(self, first: int, every: int) -> None:
        if first < 0 or every < 1:
            raise ValueError(f"first must be >= 0 and every >= 1, got {first} and {every}")
        self.first = first
        self.every = every
        self.count = 0

    def take(self) -> bool:
        self.count += 1
        return self.count <= self.first or self.count % self.every == 0


@dataclass(slots=True, eq=False)
class _LegRecord:
    call_id: str
    key: TransportKey | None
    finished: asyncio.Future[TerminalEvent | None]
    pre_ack_task: asyncio.Task[None] | None = field(default=None, repr=False)


class LegManager:
    """Owns a UacCore and the Transports on the running loop; see the module docstring.

    `core_config.local_addresses` is replaced by the bound socket's address for every
    transport unless `advertise_bound_address` is False (e.g. a fixed public address).
    Messages the core cannot read are logged with their source and the parse error: the first
    `bad_input_log_first`, then every `bad_input_log_every`-th (all are counted in core.stats).
    Which transport a request goes over (a request over 1300 bytes over TCP, RFC 3261 §18.1.1,
    unless CoreConfig.udp_only) is the core's choice (sipstack.transport.transport_for_request):
    the manager sends every message over the transport the core named.
    """

    def __init__(
        self,
        core_config: CoreConfig,
        transport_config: TransportConfig | None = None,
        hooks: ManagerHooks | None = None,
        *,
        advertise_bound_address: bool = True,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        bad_input_log_first: int = BAD_INPUT_LOG_FIRST,
        bad_input_log_every: int = BAD_INPUT_LOG_EVERY,
    ) -> None:
        self.hooks = hooks or ManagerHooks()
        self._bad_input_sampler = _Sampler(bad_input_log_first, bad_input_log_every)
        self.stats = ManagerStats()
        self._core_config = core_config
        self._advertise_bound = advertise_bound_address
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self.transports = Transports(
            transport_config or TransportConfig(),
            self._on_receive,
            self._on_connection_lost,
            on_batch_end=self._pump,
            logger=self._log,
        )
        self._core: UacCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._legs: dict[str, _LegRecord] = {}
        self._receivers: list[Receiver] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._pumping = False
        self._pump_again = False
        self._closing = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets and create the core advertising their address."""
        self._loop = asyncio.get_running_loop()
        await self.transports.start()
        config = self._core_config
        if self._advertise_bound:
            addresses = self.transports.advertised_addresses()
            # No TLS listener: TLS dials rely on ;alias reuse of our own connection (RFC 5923);
            # the core refuses them unless told so (sipstack.uac_build).
            config = dataclasses.replace(
                config, local_addresses=addresses,
                tls_connection_reuse=Transport.TLS not in addresses,
            )
            for kind in Transport:
                if kind not in addresses:
                    self._log.info(
                        "no %s listener: a far end reaches us over %s only on our own "
                        "connection (Via ;alias, RFC 5923), not at our Contact", kind, kind,
                    )
        self._core = UacCore(config, on_bad_input=self._log_bad_input)

    @property
    def core(self) -> UacCore:
        if self._core is None:
            raise RuntimeError("LegManager.start() has not been awaited")
        return self._core

    @property
    def local_address(self) -> Address:
        return self.transports.local_address()

    def add_receiver(self, receiver: Receiver) -> None:
        """Offer every received message to `receiver` first (call on the loop)."""
        self._receivers.append(receiver)

    def live_legs(self) -> list[str]:
        return list(self._legs)

    async def close(self, timeout: float = 5.0) -> None:
        """CANCEL or BYE every live leg, wait for their ends up to `timeout`, close sockets.

        Legs still live after the timeout are dropped (on_leg_removed still runs once).
        """
        if self._closed:
            return
        self._closing = True
        core = self.core
        for call_id, record in list(self._legs.items()):
            try:
                if record.pre_ack_task is not None and not record.pre_ack_task.done():
                    record.pre_ack_task.cancel()
                    core.abort_answer(call_id, "signaling shutting down", self._clock())
                elif core.is_established(call_id):
                    core.bye(call_id, self._clock())
                else:
                    core.cancel(call_id, self._clock())
            except LocalProtocolError as exc:
                self._log.debug(
                    "close: leaving %s to finish by itself: %s", call_id, exc,
                    extra=call_fields(call_id=call_id),
                )
        self._pump()
        waits = [record.finished for record in self._legs.values()]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
        for call_id in list(self._legs):
            self._log.warning(
                "close: dropping leg %s that did not end within %s s", call_id, timeout,
                extra=call_fields(call_id=call_id),
            )
            self.drop_leg(call_id)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        await self.transports.close()

    # -- API (call on the loop) ------------------------------------------------------------

    async def dial(self, request: DialRequest) -> str:
        """Send the INVITE; return the leg's Call-ID. LocalProtocolError on a bad request."""
        if self._closing:
            raise LocalProtocolError("LegManager is closing; no new legs")
        core = self.core
        call_id = core.dial(request, self._clock())
        outgoing = core.outgoing()
        self._track(call_id, (outgoing[0].transport, outgoing[0].address) if outgoing else None)
        self._send(outgoing)
        self._pump()
        return call_id

    def _track(self, call_id: str, key: TransportKey | None) -> None:
        assert self._loop is not None
        self._legs[call_id] = _LegRecord(call_id, key, self._loop.create_future())
        if key is not None:
            self.transports.acquire(*key)

    def send_cancel(self, call_id: str) -> None:
        """CANCEL an unanswered leg (queued until the first 1xx); a second call is a no-op."""
        self.core.cancel(call_id, self._clock())
        self._pump()

    def send_bye(self, call_id: str, reason: LocalHangup | None = None) -> None:
        """BYE an established leg; `reason` picks its Reason header (default: normal)."""
        self.core.bye(call_id, self._clock(), reason=reason)
        self._pump()

    def hangup(self, call_id: str) -> None:
        """End a leg whatever its state: BYE when established, CANCEL before."""
        if self.core.is_established(call_id):
            self.send_bye(call_id)
        else:
            self.send_cancel(call_id)

    def drop_leg(self, call_id: str) -> bool:
        """Forget a leg without sending anything (its terminal event still comes); True when
        it existed."""
        dropped = self.core.drop(call_id)
        self._pump()
        record = self._legs.get(call_id)
        if record is not None:  # the core had no such leg, yet we did: never leak the record
            self._remove(record, None)
        return dropped

    def is_leg_established(self, call_id: str) -> bool:
        return self.core.is_established(call_id)

    def cleanup_leg_if_present(self, call_id: str, reason_class: str = "") -> None:
        """End a leg without SIP after the peer left (learned elsewhere); no-op if unknown.

        `reason_class` is a HangupReason value ("" means normal); LocalProtocolError otherwise.
        """
        self.core.cleanup_if_present(call_id, reason_class, self._clock())
        self._pump()

    def dialog_snapshot(self, call_id: str) -> DialogSnapshot:
        """What another process needs to end this leg if we die (stored by the worker)."""
        return self.core.dialog_snapshot(call_id)

    def end_recovered(self, snapshot: DialogSnapshot) -> str:
        """End a leg a dead process owned (BYE if answered, else CANCEL); returns its Call-ID."""
        assert self._loop is not None
        call_id = self.core.end_recovered(snapshot, self._clock())
        self._track(call_id, (snapshot.transport, snapshot.peer_address))
        self._pump()
        return call_id

    def leg_finished(self, call_id: str) -> asyncio.Future[TerminalEvent | None]:
        """A future resolved with the leg's terminal event (None if it was dropped)."""
        record = self._legs.get(call_id)
        if record is None:
            raise LocalProtocolError(f"unknown call-id {call_id!r}")
        return record.finished

    def all_stats(self) -> dict[str, int]:
        """Core, transport and manager counters in one flat dict (for metrics and the bench)."""
        merged: dict[str, int] = {}
        if self._core is not None:
            merged.update(self._core.stats.as_dict())
        merged.update(dataclasses.asdict(self.transports.stats))
        merged.update(dataclasses.asdict(self.stats))
        return merged

    # -- inputs ----------------------------------------------------------------------------

    def _on_receive(self, data: bytes, source: Address, transport: Transport) -> None:
        # No pump here: the transports call _pump once after each burst of messages.
        if self._core is None:
            return
        for hook in self.hooks.subscribers("on_signaling_received"):
            self._run_hook(hook, data, transport, source)
        if self._offer_to_receivers(data, source, transport):
            return
        try:
            self._core.receive(data, source, transport, self._clock())
        except Exception:
            self.stats.core_errors += 1
            self._log.exception(
                "core failed on %d bytes from %s over %s", len(data), source, transport
            )

    def _offer_to_receivers(self, data: bytes, source: Address, transport: Transport) -> bool:
        for receiver in self._receivers:
            try:
                if receiver(data, source, transport):
                    return True
            except Exception:
                self.stats.hook_errors += 1
                self._log.exception("receiver %s failed", receiver)
        return False

    def _log_bad_input(self, source: Address, transport: Transport, error: ValueError) -> None:
        sampler = self._bad_input_sampler
        if not sampler.take():
            return
        self._log.warning(
            "unreadable message #%d from %s over %s dropped: %s "
            "(logged: the first %d, then every %d-th)",
            sampler.count, format_hostport(*source), transport, error, sampler.first, sampler.every,
        )  # fmt: skip

    def _on_connection_lost(self, transport: Transport, address: Address) -> None:
        if self._core is None:
            return
        try:
            self._core.connection_lost(transport, address, self._clock())
        except Exception:
            self.stats.core_errors += 1
            self._log.exception("core failed on the loss of %s %s", transport, address)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.stats.timer_fires += 1
        # Responses already waiting in the socket go first, or a late loop would make the
        # core retransmit requests that were answered (and a strict peer abort the call).
        self.transports.drain_udp()
        try:
            self.core.handle_timer(self._clock())
        except Exception:
            self.stats.core_errors += 1
            self._log.exception("core failed handling its timer")
        self._pump()

    # -- output ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Send, dispatch and re-arm until the core has nothing more; re-entry just loops."""
        if self._pumping:
            self._pump_again = True
            return
        core = self._core
        if core is None:
            return
        self._pumping = True
        try:
            while True:
                self._pump_again = False
                self._send(core.outgoing())
                for event in core.events():
                    self._dispatch(event)
                if not self._pump_again:
                    break
        finally:
            self._pumping = False
        self._arm_timer()

    def _send(self, outgoing: list[Any]) -> None:
        if not outgoing or self._closed:
            return
        hooks = self.hooks.subscribers("on_signaling_sent")
        send = self.transports.send
        for item in outgoing:
            data, transport = item.data, item.transport
            send(data, transport, item.address)
            for hook in hooks:
                self._run_hook(hook, data, transport, item.address)

    def _dispatch(self, event: CoreEvent) -> None:
        if isinstance(event, LegEvent):
            record = self._legs.get(event.call_id)
            for hook in self.hooks.subscribers("on_event"):
                self._run_hook(hook, event)
            if isinstance(event, DialogEstablished):
                for hook in self.hooks.subscribers("on_established"):
                    self._run_hook(hook, event)
            if event.terminal and record is not None:
                self._remove(record, event)  # type: ignore[arg-type]
        elif isinstance(event, AnswerReceived):
            self._answer(event)
        elif isinstance(event, CallIdAdopted):
            record = self._legs.pop(event.old_call_id, None)
            if record is not None:
                record.call_id = event.new_call_id
                self._legs[event.new_call_id] = record
            for hook in self.hooks.subscribers("on_dialog_call_id_adopted"):
                self._run_hook(hook, event.old_call_id, event.new_call_id, event.correlation_id)

    def _answer(self, event: AnswerReceived) -> None:
        pre_ack = self.hooks.pre_ack
        if pre_ack is None:
            self._confirm(event.call_id)
            return
        assert self._loop is not None
        task = self._loop.create_task(self._run_pre_ack(pre_ack, event))
        record = self._legs.get(event.call_id)
        if record is not None:
            record.pre_ack_task = task

    async def _run_pre_ack(
        self, pre_ack: Callable[[AnswerReceived], Awaitable[None]], event: AnswerReceived
    ) -> None:
        try:
            await pre_ack(event)
        except Exception as exc:
            self.stats.pre_ack_failures += 1
            answer_fields = call_fields(
                call_id=event.call_id, correlation_id=event.correlation_id
            )
            self._log.warning("pre_ack refused %s: %s", event.call_id, exc, extra=answer_fields)
            try:
                self.core.abort_answer(event.call_id, f"pre_ack failed: {exc}", self._clock())
            except LocalProtocolError as gone:
                self._log.info(
                    "pre_ack abort for %s found no leg: %s", event.call_id, gone,
                    extra=answer_fields,
                )
            self._pump()
            return
        self._confirm(event.call_id)

    def _confirm(self, call_id: str) -> None:
        try:
            self.core.confirm_answer(call_id, self._clock())
        except LocalProtocolError as exc:  # the leg ended while pre_ack ran
            self._log.info(
                "answer of %s not confirmed: %s", call_id, exc,
                extra=call_fields(call_id=call_id),
            )
        self._pump()

    def _remove(self, record: _LegRecord, event: TerminalEvent | None) -> None:
        if self._legs.get(record.call_id) is record:
            del self._legs[record.call_id]
        if record.key is not None:
            self.transports.release(*record.key)
            record.key = None
        if not record.finished.done():
            record.finished.set_result(event)
        for hook in self.hooks.subscribers("on_leg_removed"):
            self._run_hook(hook, record.call_id)

    def _arm_timer(self) -> None:
        """Keep one loop timer at or before the core's next deadline.

        A later or vanished deadline leaves the armed timer alone: it fires early once, the
        core finds nothing due, and we re-arm. That spares a cancel + call_later per message.
        """
        if self._closed or self._core is None or self._loop is None:
            return
        deadline = self._core.next_deadline()
        if deadline is None:
            return
        armed = self._timer_deadline
        if self._timer is not None and armed is not None and armed <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)

    def _run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            self.stats.hook_errors += 1
            self._log.exception("hook %s failed", getattr(hook, "__name__", hook))


class SignalingService:
    """A LegManager on its own thread and event loop, with thread-safe entry points.

    Celery tasks (threads pool) call `dial_threadsafe` etc. and get concurrent futures back.
    """

    def __init__(
        self,
        core_config: CoreConfig,
        transport_config: TransportConfig | None = None,
        hooks: ManagerHooks | None = None,
        *,
        thread_name: str = "sip-signaling",
        logger: logging.Logger | None = None,
    ) -> None:
        self._manager_args = (core_config, transport_config, hooks)
        self._thread_name = thread_name
        self._log = logger or logging.getLogger(__name__)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: LegManager | None = None
        self._thread: threading.Thread | None = None

    @property
    def manager(self) -> LegManager:
        if self._manager is None:
            raise RuntimeError("SignalingService.start() has not been called")
        return self._manager

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("SignalingService.start() has not been called")
        return self._loop

    def start(self, timeout: float = 10.0) -> None:
        """Start the loop thread and bind the sockets; raises what binding raised."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=self._thread_name, daemon=True
        )
        self._thread.start()
        started.result(timeout=timeout)

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        core_config, transport_config, hooks = self._manager_args
        manager = LegManager(core_config, transport_config, hooks, logger=self._log)
        try:
            loop.run_until_complete(manager.start())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        self._manager = manager
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, coroutine: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run a coroutine on the signaling loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, function: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        """Run a plain manager method on the loop from any thread."""

        async def invoke() -> _T:
            return function(*args)

        return self.submit(invoke())

    def dial_threadsafe(self, request: DialRequest) -> concurrent.futures.Future[str]:
        return self.submit(self.manager.dial(request))

    def cancel_threadsafe(self, call_id: str) -> concurrent.futures.Future[None]:
        return self.call(self.manager.send_cancel, call_id)

    def hangup_threadsafe(self, call_id: str) -> concurrent.futures.Future[None]:
        """BYE when established, CANCEL before (for control messages from schedulers)."""
        return self.call(self.manager.hangup, call_id)

    def stop(self, timeout: float = 10.0) -> None:
        """End live legs (CANCEL/BYE, waiting up to most of `timeout`), then stop the thread."""
        if self._loop is None or self._thread is None:
            return
        if self._manager is not None and self._loop.is_running():
            closing = self.submit(self._manager.close(timeout=max(0.1, timeout - 1.0)))
            try:
                closing.result(timeout=timeout)
            except (concurrent.futures.TimeoutError, Exception) as exc:
                self._log.warning("signaling close did not finish cleanly: %s", exc)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)
        self._thread = None
