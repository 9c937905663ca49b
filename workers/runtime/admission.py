"""The trunk checks a worker makes before it admits dials: OPTIONS health and carrier
back-pressure, with their stream records and gauges (docs/routing.md).

`TrunkGate` is one per worker, for the trunk it is pinned to:
- `cps()` is the rate to pass to `TrunkLimits.admit_many`: the trunk's `cps` times the shared
  back-pressure factor; it publishes `trunk_throttled` / `trunk_recovered` when this worker
  sees the factor cross 1.
- `is_up()` says whether the OPTIONS health checks let the trunk take INVITEs at all;
  `trunk_is_up(name)` answers for any trunk from the shared board (True without evidence),
  for trunk-group failover.
- `leg_ended(event)` runs on the signaling loop for every leg event and hands a 503/429 with
  Retry-After to a reporting thread, which cuts the shared factor; the loop never waits on
  Redis. The pinger's up/down edges go through the same thread onto the stream.
- `start(signaling)` / `stop(signaling)` run the `HealthPinger` on the signaling loop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from sipstack.events import LegEvent, LegTerminated
from sipstack.health import HealthRule, TrunkHealth
from workers.config.settings import Settings, TrunkConfig
from workers.coordination.backpressure import (
    BackPressure,
    BackPressureConfig,
    is_backoff_signal,
    pressure_event,
)
from workers.coordination.health import HealthPinger, TrunkHealthBoard, health_event
from workers.events.stream import REDIS_UNAVAILABLE
from workers.observability.pressure_metrics import register_pressure_gauges
from workers.signaling.manager import SignalingService
from workers.signaling.options_ping import PingResult

log = logging.getLogger(__name__)


def backpressure_config(trunk: TrunkConfig) -> BackPressureConfig:
    return BackPressureConfig(
        decrease=trunk.backpressure_decrease, increase=trunk.backpressure_increase,
        interval=trunk.backpressure_interval, min_factor=trunk.backpressure_min_factor,
        guard=trunk.backpressure_guard, max_hold=trunk.backpressure_max_hold,
    )


def health_rule(trunk: TrunkConfig) -> HealthRule:
    return HealthRule(down_after=trunk.health_down_after, up_after=trunk.health_up_after)


class TrunkGate:
    """Health and back-pressure of one worker's trunk, shared with its other workers in Redis."""

    def __init__(
        self, client: redis.Redis[Any], settings: Settings, trunk: TrunkConfig, *,
        bind_host: str = "127.0.0.1", clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._settings = settings
        self.trunk = trunk
        self._clock = clock
        self.pressure = (BackPressure(client, settings, backpressure_config(trunk))
                         if trunk.backpressure else None)
        self.board = TrunkHealthBoard(client, settings, health_rule(trunk),
                                      stale_after=trunk.health_stale_after)
        self.pinger = HealthPinger(
            self.board, [trunk], interval=trunk.health_interval, timeout=trunk.health_timeout,
            bind_host=bind_host, clock=clock, on_change=self._health_changed,
        ) if trunk.health_check else None
        self._reports = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"trunk-reports-{trunk.name}")

    # --- admission (dial threads) -----------------------------------------------------------

    def cps(self) -> float:
        """The calls per second to admit now; raises what Redis raises (the caller retries the
        dials later, as for the limits themselves)."""
        if self.pressure is None:
            return self.trunk.cps
        cps, record = self.pressure.poll(self.trunk.name, self.trunk.cps, self._clock())
        # The cut's record comes from the worker whose 503/429 made it (with the status and
        # Retry-After); a sibling noticing the same edge would repeat it without them.
        if record is not None and record["state"] == "trunk_recovered":
            self._publish(record)
        return cps

    def is_up(self) -> bool:
        """False only when this trunk's health checks say it is down (no checks: up)."""
        return self.pinger is None or self.trunk_is_up(self.trunk.name)

    def trunk_is_up(self, name: str) -> bool:
        """The shared board's verdict on any trunk; True without evidence (never pinged, the
        verdict lapsed, or Redis unreachable: no pings is no verdict)."""
        try:
            return self.board.is_up(name)
        except REDIS_UNAVAILABLE:
            return True

    # --- reports (signaling loop in, reporting thread out) --------------------------------

    def leg_ended(self, event: LegEvent) -> None:
        """For every leg event, on the loop: a final 503/429 with Retry-After slows the trunk."""
        if self.pressure is None or not isinstance(event, LegTerminated):
            return
        status, retry_after = event.final_status_code, event.retry_after
        if is_backoff_signal(status, retry_after):
            self._report(self._signal, status, retry_after, self._clock())

    def _signal(self, status: int, retry_after: float, now: float) -> None:
        assert self.pressure is not None
        name = self.trunk.name
        before, after = self.pressure.signal(name, status, retry_after, now)
        record = pressure_event(name, before, after, now, configured_cps=self.trunk.cps,
                                status=status, retry_after=retry_after)
        if record is not None:
            log.warning("trunk %s throttled to %s cps after %d Retry-After %g", name,
                        record["cps"], status, retry_after)
            self._publish(record)

    def _health_changed(self, trunk: str, health: TrunkHealth, result: PingResult) -> None:
        self._report(self._publish, health_event(trunk, health, result))

    def _report(self, function: Callable[..., None], *args: Any) -> None:
        try:
            self._reports.submit(self._quietly, function, *args)
        except RuntimeError:  # shut down: a report after stop is dropped
            log.debug("trunk report after stop dropped")

    @staticmethod
    def _quietly(function: Callable[..., None], *args: Any) -> None:
        try:
            function(*args)
        except REDIS_UNAVAILABLE as error:
            log.warning("trunk report lost, Redis unavailable: %s", error.__class__.__name__)

    def _publish(self, record: Mapping[str, str]) -> None:
        self._redis.xadd(self._settings.events_stream(self.trunk.name), dict(record),
                         maxlen=self._settings.events_maxlen, approximate=True)

    # --- lifecycle ------------------------------------------------------------------------

    def register_gauges(self, registry: CollectorRegistry) -> None:
        """`outbound_trunk_cps_factor` and `outbound_trunk_up` for this trunk."""
        name = self.trunk.name
        factor = self.pressure.gauge_reader(name) if self.pressure is not None else None
        register_pressure_gauges(registry, name, factor=factor or (lambda: 1.0),
                                 up=lambda: self.board.last_up(name))

    def start(self, signaling: SignalingService) -> None:
        if self.pinger is not None:
            signaling.call(self.pinger.start).result(timeout=10)

    def stop(self, signaling: SignalingService) -> None:
        """Stop pinging and send the reports still queued (before Redis is closed)."""
        if self.pinger is not None:
            try:
                signaling.submit(self.pinger.stop()).result(timeout=10)
            except Exception as error:
                log.warning("health pinger did not stop cleanly: %s", error)
        self.close()

    def close(self) -> None:
        """Send the reports still queued; later ones are dropped."""
        self._reports.shutdown(wait=True)
