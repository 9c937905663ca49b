"""Gauges for carrier back-pressure and trunk health, read at scrape time without I/O.

`outbound_trunk_cps_factor{trunk}`: the share of the configured CPS the trunk gets (1: no
back-pressure), this process's last reading (`BackPressure.last_factor`).
`outbound_trunk_up{trunk}`: 1 when the OPTIONS health check says the trunk is up
(`TrunkHealthBoard.last_up`). workers/observability/metrics.py can call these with its own
registry and trunk.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge


def register_pressure_gauges(
    registry: CollectorRegistry, trunk: str, *,
    factor: Callable[[], float], up: Callable[[], float] | None = None,
) -> None:
    """Register the gauges for `trunk` on `registry`; `factor`/`up` are read on each scrape."""
    cps_factor = Gauge(
        "outbound_trunk_cps_factor", "Share of the configured CPS after carrier back-pressure",
        ["trunk"], registry=registry,
    )
    cps_factor.labels(trunk).set_function(factor)
    if up is not None:
        trunk_up = Gauge(
            "outbound_trunk_up", "1 when the trunk answers OPTIONS health checks",
            ["trunk"], registry=registry,
        )
        trunk_up.labels(trunk).set_function(up)
