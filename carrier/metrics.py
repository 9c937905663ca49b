"""Prometheus view of the carrier simulator's counters: calls by outcome, messages, active calls."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carrier.core import CarrierCore


class CarrierCollector(Collector):
    """Reads the core's counters at scrape time; nothing is counted twice or kept in sync."""

    def __init__(self, core: CarrierCore) -> None:
        self._core = core

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._core.stats
        outcomes = CounterMetricFamily(
            "outbound_carrier_calls", "Calls the simulator handled, by outcome", labels=["outcome"]
        )
        for outcome, count in stats.outcomes().items():
            if outcome != "calls":
                outcomes.add_metric([outcome], count)
        yield outcomes
        yield CounterMetricFamily(
            "outbound_carrier_invites", "INVITEs that started a call", value=stats.calls
        )
        messages = CounterMetricFamily(
            "outbound_carrier_sip_messages", "SIP messages by direction", labels=["direction"]
        )
        messages.add_metric(["in"], stats.messages_received)
        messages.add_metric(["out"], stats.messages_sent)
        yield messages
        yield CounterMetricFamily(
            "outbound_carrier_retransmissions", "Messages we sent again",
            value=stats.retransmissions,
        )
        yield CounterMetricFamily(
            "outbound_carrier_parse_errors", "Received bytes that were not SIP",
            value=stats.parse_errors,
        )
        yield GaugeMetricFamily(
            "outbound_carrier_active_calls", "Calls in progress", value=self._core.active_calls
        )


def carrier_registry(core: CarrierCore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CarrierCollector(core))
    return registry
