"""A trunk's REGISTER binding run on the signaling loop: sipstack.register.Registration wired to
the LegManager's sockets, its own loop timer, and the state the worker's dials wait on.

Responses are routed here by Call-ID before the leg core sees them (the binding keeps one
Call-ID for its life, RFC 3261 §10.2). What the dials do meanwhile (docs/trunks.md): the
worker waits for the first result at start; afterwards a trunk whose binding is not in force
(the registrar refused it, or it lapsed while retrying with back-off) fails its dials before
their INVITE, as a configuration problem of the trunk, until a retry registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from sipstack.register import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationEvent,
    RegistrationFailed,
    RegState,
    Unregistered,
)
from sipstack.transport import Address, Transport
from sipstack.uri import format_host, format_hostport
from workers.config.settings import Settings
from workers.config.trunks import TrunkConfig
from workers.signaling.manager import LegManager


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """What `outbound trunks check`, the log and the gauge show about a binding."""

    trunk: str
    aor: str
    state: str  # a RegState value
    registered: bool  # a binding is in force now (a refresh may be in flight)
    expires_at: float | None  # when the binding in force runs out
    last_error: str  # the last failure, "" after a success
    at: float

    def as_fields(self) -> dict[str, str]:
        return {
            "aor": self.aor, "state": self.state, "registered": "1" if self.registered else "0",
            "expires_at": "" if self.expires_at is None else f"{self.expires_at:.3f}",
            "last_error": self.last_error, "at": f"{self.at:.3f}",
        }  # fmt: skip


def registration_config(trunk: TrunkConfig, manager: LegManager) -> RegistrationConfig:
    """The binding of a trunk with `register = true`, Contact and Via at our listener."""
    transport = trunk.transport
    host, port = manager.transports.local_address(
        transport if manager.transports.is_listening(transport) else Transport.UDP
    )
    domain = format_host(trunk.domain or trunk.proxy_address[0])
    scheme = "sips" if transport is Transport.TLS else "sip"
    user = (trunk.credentials.username if trunk.credentials else "") or trunk.caller_user
    user = user or "outbound"
    contact_params = ";transport=tcp" if transport is Transport.TCP else ""
    return RegistrationConfig(
        registrar=f"{scheme}:{domain}",
        aor=trunk.register_aor or f"{scheme}:{user}@{domain}",
        contact=trunk.register_contact
        or f"{scheme}:{user}@{format_hostport(host, port)}{contact_params}",
        address=trunk.proxy_address, transport=transport,
        via_sent_by=format_hostport(host, port), credentials=trunk.credentials,
        expires=trunk.register_expires,
    )  # fmt: skip


class TrunkRegistration:
    """One Registration driven on the manager's loop (create and use it on that loop)."""

    def __init__(
        self,
        trunk: str,
        manager: LegManager,
        config: RegistrationConfig,
        *,
        on_change: Callable[[RegistrationStatus], None] | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.trunk = trunk
        self._manager = manager
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._on_change = on_change
        self.registration = Registration(config, rng=rng)
        self._marker = self.registration.call_id.encode()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._expires_at: float | None = None
        self._last_error = ""
        self._first_result: asyncio.Future[None] = self._loop.create_future()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self.status = self._status()
        manager.add_receiver(self._receive)
        manager.transports.acquire(config.transport, config.address)

    @property
    def registered(self) -> bool:
        """A binding is in force (read from any thread: one attribute read)."""
        status = self.status
        return status.registered and (status.expires_at or 0.0) > self._clock()

    def start(self) -> None:
        self.registration.start(self._clock())
        self._pump()

    async def first_result(self, timeout: float) -> bool:
        """Wait for the first Registered or RegistrationFailed; True when registered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._first_result), timeout)
        return self.registered

    async def stop(self, timeout: float) -> None:
        """Unbind (REGISTER with Expires: 0) and wait for its answer up to `timeout`."""
        self.registration.stop(self._clock())
        self._pump()
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout)
        except TimeoutError:
            self._log.warning("REGISTER %s: no answer to the unbinding within %.1f s",
                              self.registration.config.aor, timeout)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        config = self.registration.config
        self._manager.transports.release(config.transport, config.address)

    def _receive(self, data: bytes, source: Address, transport: Transport) -> bool:
        if self._marker not in data:
            return False
        self.registration.receive(data, source, self._clock())
        self._pump()
        return True

    def _on_timer(self) -> None:
        self._timer = None
        self.registration.handle_timer(self._clock())
        self._pump()

    def _pump(self) -> None:
        for item in self.registration.outgoing():
            try:
                self._manager.transports.send(item.data, item.transport, item.address)
            except RuntimeError:
                return  # the transports are closed: nothing more goes out
        for event in self.registration.events():
            self._note(event)
        if self.registration.state is RegState.STOPPED and not self._stopped.done():
            self._stopped.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.registration.next_deadline()
        if deadline is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - self._clock()),
                                                self._on_timer)

    def _note(self, event: RegistrationEvent) -> None:
        if isinstance(event, Registered):
            self._expires_at, self._last_error = event.at + event.expires, ""
            self._log.info("REGISTER %s: registered for %d s, refresh at %.0f",
                           event.aor, event.expires, event.refresh_at)
        elif isinstance(event, RegistrationFailed):
            self._last_error = event.reason
            if self._expires_at is not None and self._expires_at <= event.at:
                self._expires_at = None
            self._log.warning("REGISTER %s failed: %s; retry at %s", event.aor, event.reason,
                              "never" if event.retry_at is None else f"{event.retry_at:.0f}")
        elif isinstance(event, Unregistered):
            self._expires_at = None
            self._log.info("REGISTER %s: unbound (%s)", event.aor, event.status)
        self.status = self._status()
        if not self._first_result.done():
            self._first_result.set_result(None)
        if self._on_change is not None:
            try:
                self._on_change(self.status)
            except Exception:
                self._log.exception("registration status hook failed")

    def _status(self) -> RegistrationStatus:
        now = self._clock()
        in_force = self._expires_at is not None and self._expires_at > now and (
            self.registration.state in (RegState.REGISTERED, RegState.REGISTERING,
                                        RegState.BACKING_OFF))
        return RegistrationStatus(
            trunk=self.trunk, aor=self.registration.config.aor,
            state=self.registration.state.value, registered=in_force,
            expires_at=self._expires_at if in_force else None,
            last_error=self._last_error, at=now,
        )  # fmt: skip


# --- the status where `outbound trunks check` and the metrics read it ----------------------


def status_key(settings: Settings, trunk: str) -> str:
    """One Redis hash per trunk: a field per worker (owner id) holding its status as JSON."""
    return settings.key("registration", trunk)


def publish_status(redis: Any, settings: Settings, owner: str, status: RegistrationStatus,
                   *, ttl: int = 86400) -> None:
    """Store a worker's binding status (blocking: call from a thread, not the loop)."""
    key = status_key(settings, status.trunk)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, owner, json.dumps(status.as_fields(), sort_keys=True))
    pipe.expire(key, ttl)
    pipe.execute()


def remove_status(redis: Any, settings: Settings, owner: str, trunk: str) -> None:
    redis.hdel(status_key(settings, trunk), owner)


def read_statuses(redis: Any, settings: Settings, trunk: str) -> dict[str, dict[str, str]]:
    """Each worker's last published status of `trunk`'s binding, by owner id."""
    raw = redis.hgetall(status_key(settings, trunk))
    out: dict[str, dict[str, str]] = {}
    for owner, value in raw.items():
        try:
            fields = json.loads(value)
        except ValueError:
            continue
        if isinstance(fields, dict):
            name = owner.decode() if isinstance(owner, bytes) else str(owner)
            out[name] = {str(k): str(v) for k, v in fields.items()}
    return out


def registration_summary(statuses: dict[str, dict[str, str]], now: float) -> str:
    """One line for `outbound trunks check` from the workers' published statuses."""
    if not statuses:
        return "no worker registering"
    bound = [f for f in statuses.values()
             if f.get("registered") == "1" and float(f.get("expires_at") or 0) > now]
    if bound:
        left = min(float(f["expires_at"]) for f in bound) - now
        return f"registered ({len(bound)} of {len(statuses)} workers), expires in {left:.0f} s"
    errors = sorted({f.get("last_error") or f.get("state", "?") for f in statuses.values()})
    return f"NOT registered: {'; '.join(errors)}"


def register_gauge(registry: CollectorRegistry, trunk: str, read: Callable[[], bool]) -> None:
    """`outbound_trunk_registered{trunk}`: 1 while this worker's binding is in force."""
    gauge = Gauge("outbound_trunk_registered", "1 while the trunk's REGISTER binding is in force",
                  ["trunk"], registry=registry)
    gauge.labels(trunk).set_function(lambda: 1.0 if read() else 0.0)
