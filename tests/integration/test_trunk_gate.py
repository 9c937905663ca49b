"""The worker's trunk gate (workers/runtime/admission.py) on the real Redis with a fake clock:
the CPS it admits after a 503 with Retry-After and its recovery, the stream records, the
health verdict it gives admission and failover."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.events import LegEnded, LegFailed, LegTerminated
from sipstack.health import TrunkHealth
from tests.clock import FakeClock
from workers.config.settings import Settings, TrunkConfig
from workers.runtime.admission import TrunkGate
from workers.signaling.options_ping import PingResult

pytestmark = pytest.mark.services

TRUNK = TrunkConfig(name="gate", proxy="127.0.0.1:5999", cps=10.0, backpressure_decrease=0.5,
                    backpressure_increase=0.25, backpressure_interval=2.0)


def ended(status: int, retry_after: float | None, kind: type[LegTerminated] = LegFailed
          ) -> LegTerminated:
    record = CdrRecord(
        call_id="c1", correlation_id="k1", scenario="s", trunk="gate", from_uri="sip:a@h",
        to_uri="sip:b@h", started_at=0.0, first_provisional_at=None, answered_at=None,
        ended_at=1.0, final_status_code=status, disposition=Disposition.CONGESTION,
        hangup_reason=HangupReason.NORMAL, hangup_by=HangupBy.REMOTE, retry_after=retry_after,
    )
    return kind(call_id="c1", correlation_id="k1", scenario="s", at=1.0, status_code=status,
                cdr=record)


def records(client: redis.Redis[Any], settings: Settings) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in client.xrange(settings.events_stream("gate"))]


def test_a_503_with_retry_after_halves_the_cps_until_it_recovers(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    clock = FakeClock(1_000.0)
    gate = TrunkGate(redis_client, redis_settings, TRUNK, clock=clock)
    other = TrunkGate(redis_client, redis_settings, TRUNK, clock=clock)  # a second worker
    assert gate.cps() == 10.0 and other.cps() == 10.0
    gate.leg_ended(ended(486, 5.0))  # not a back-off signal
    gate.leg_ended(ended(503, None))  # RFC 3261 §21.5.4: a plain 503 is a failure, no slow-down
    gate.leg_ended(ended(503, 4.0))
    gate.close()  # the reporting thread has sent what it had
    assert other.cps() == 5.0 and gate.cps() == 5.0  # shared: both workers admit half
    clock.advance(4.0)
    assert other.cps() == 5.0  # held for the Retry-After, then one step per interval
    clock.advance(2.0)
    assert other.cps() == 7.5
    clock.advance(2.0)
    assert other.cps() == 10.0
    states = [(r["state"], r["factor"], r["event_id"]) for r in records(redis_client,
                                                                         redis_settings)]
    # only the gate whose 503 cut writes the cut (with its status); the recovery is noticed
    # by whichever gate reads the factor back at 1 first
    records_by_state = {r["state"]: r for r in records(redis_client, redis_settings)}
    assert (records_by_state["trunk_throttled"]["status_code"],
            records_by_state["trunk_throttled"]["reason"]) == ("503", "503 Retry-After 4")
    assert states == [
        ("trunk_throttled", "0.5000", "trunk:gate:trunk_throttled:1000000"),
        ("trunk_recovered", "1.0000", "trunk:gate:trunk_recovered:1008000"),
    ]


def test_a_trunk_without_backpressure_ignores_retry_after(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    trunk = TRUNK.model_copy(update={"backpressure": False})
    gate = TrunkGate(redis_client, redis_settings, trunk, clock=FakeClock())
    gate.leg_ended(ended(429, 30.0, LegEnded))
    gate.close()
    assert gate.cps() == 10.0 and records(redis_client, redis_settings) == []


def test_health_verdicts_for_admission_and_failover(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    checked = TrunkGate(redis_client, redis_settings,
                        TRUNK.model_copy(update={"health_check": True}), clock=FakeClock())
    unchecked = TrunkGate(redis_client, redis_settings, TRUNK, clock=FakeClock())
    assert checked.is_up() and checked.trunk_is_up("never-pinged")  # no evidence: up
    for now in (1.0, 2.0, 3.0):  # three misses (health_down_after's default)
        checked.board.record("gate", False, now)
    assert not checked.is_up() and not checked.trunk_is_up("gate")
    assert unchecked.is_up()  # a worker that does not check its trunk never refuses
    assert not unchecked.trunk_is_up("gate")  # but failover sees the shared board
    checked.close()
    unchecked.close()

    away: redis.Redis[Any] = redis.Redis(port=1, socket_connect_timeout=0.2)
    blind = TrunkGate(away, redis_settings, TRUNK.model_copy(update={"health_check": True}))
    assert blind.is_up() and blind.trunk_is_up("gate")  # Redis unreachable: no verdict
    blind.close()


def test_up_and_down_edges_become_stream_records(
    redis_client: redis.Redis[Any], redis_settings: Settings
) -> None:
    gate = TrunkGate(redis_client, redis_settings, TRUNK, clock=FakeClock())
    miss = PingResult(trunk="gate", proxy=TRUNK.proxy, transport="udp", status=None, reason="",
                      rtt_ms=None, sent=3, error="no response in 5 s")
    answer = PingResult(trunk="gate", proxy=TRUNK.proxy, transport="udp", status=200,
                        reason="OK", rtt_ms=1.0, sent=1, error=None)
    gate._health_changed("gate", TrunkHealth(up=False, misses=3, since=50.0), miss)
    gate._health_changed("gate", TrunkHealth(up=True, successes=2, since=90.0), answer)
    gate.close()
    assert [(r["state"], r["event_id"], r["reason"], r["status_code"], r["misses"],
             r["successes"]) for r in records(redis_client, redis_settings)] == [
        ("trunk_down", "trunk:gate:trunk_down:50000", "no response in 5 s", "", "3", "0"),
        ("trunk_up", "trunk:gate:trunk_up:90000", "OPTIONS 200 OK", "200", "0", "2"),
    ]
