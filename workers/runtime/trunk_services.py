"""A trunk's services beside its calls: the REGISTER binding its dials wait on and the
STIR/SHAKEN signing of each INVITE. A mixin of WorkerRuntime, whose state it uses (declared
below); the pieces are workers/signaling/registrations.py and identity.py."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from typing import Any

from sipstack.dial import DialRequest
from workers.config.settings import Settings
from workers.config.trunks import TrunkConfig
from workers.events.entries import REDIS_UNAVAILABLE
from workers.observability.attach import WorkerObservability
from workers.runtime.book import LegContext
from workers.signaling.identity import CallSigner
from workers.signaling.manager import SignalingService
from workers.signaling.registrations import (
    RegistrationStatus,
    TrunkRegistration,
    publish_status,
    register_gauge,
    registration_config,
    remove_status,
)

log = logging.getLogger("workers.runtime.worker")

FIRST_REGISTER_WAIT = 10.0  # seconds the start waits for a registering trunk's first answer
UNREGISTER_WAIT = 3.0  # seconds the stop waits for the answer to REGISTER with Expires: 0


class TrunkServices:
    """REGISTER and STIR/SHAKEN of a running worker (mixed into WorkerRuntime)."""

    # WorkerRuntime's state these use
    trunk: TrunkConfig
    settings: Settings
    owner: str
    redis: Any
    signaling: SignalingService
    observability: WorkerObservability
    registration: TrunkRegistration | None
    call_signer: CallSigner | None
    _registration_writer: concurrent.futures.ThreadPoolExecutor

    def _start_registration(self) -> None:
        """Bind the trunk at its registrar when it has `register = true`; wait (boundedly)
        for the first answer so the first dials find the binding in force."""
        if not self.trunk.registers:
            return
        self._registration_writer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="registration-status")

        async def start() -> bool:
            manager = self.signaling.manager
            self.registration = TrunkRegistration(
                self.trunk.name, manager, registration_config(self.trunk, manager),
                on_change=self._registration_changed, logger=log,
            )
            self.registration.start()
            return await self.registration.first_result(FIRST_REGISTER_WAIT)

        registered = self.signaling.submit(start()).result(timeout=FIRST_REGISTER_WAIT + 5)
        metrics = self.observability.metrics
        if metrics is not None:
            register_gauge(metrics.registry, self.trunk.name, self._trunk_registered)
        if not registered:
            log.warning("trunk %s is not registered yet: its dials fail until it is",
                        self.trunk.name)

    def _trunk_registered(self) -> bool:
        return self.registration is not None and self.registration.registered

    def _registration_changed(self, status: RegistrationStatus) -> None:
        """On the loop: the Redis write goes to one thread, in order (never blocks the loop)."""
        def publish() -> None:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                publish_status(self.redis, self.settings, self.owner, status)

        self._registration_writer.submit(publish)

    def _stop_registration(self) -> None:
        registration = self.registration
        if registration is None:
            return
        try:
            self.signaling.submit(registration.stop(UNREGISTER_WAIT)).result(
                timeout=UNREGISTER_WAIT + 5)
        except Exception as error:
            log.warning("unregistering trunk %s failed: %s", self.trunk.name, error)
        def remove() -> None:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                remove_status(self.redis, self.settings, self.owner, self.trunk.name)

        self._registration_writer.submit(remove).result(timeout=10)  # after every publish
        self._registration_writer.shutdown()

    def _registration_refusal(self) -> str:
        """Why a dial may not go out now because of the trunk's binding ("" when it may)."""
        registration = self.registration
        if registration is None or registration.registered:
            return ""
        status = registration.status
        why = status.last_error or f"binding {status.state}"
        return f"trunk {self.trunk.name} is not registered ({why}): configuration"

    def _sign_invite(self, context: LegContext, request: DialRequest) -> DialRequest:
        """On the loop, right before the INVITE: the Identity header with a fresh iat."""
        assert self.call_signer is not None
        try:
            return self.call_signer.sign(request, context.stir_attest)
        except ValueError as error:
            raise ValueError(f"STIR/SHAKEN: {error}") from None
