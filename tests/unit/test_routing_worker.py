"""The worker's side of routing: a CDR's local cause and outcome, the trunks file's groups
and trunk keys, and the message a failed-over call is handed to the next trunk with."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from sipstack.cdr import CdrRecord, Disposition, HangupBy, HangupReason
from sipstack.events import LegEnded, LegFailed
from sipstack.outcome import LocalCause, Outcome
from workers.config.errors import ConfigError
from workers.config.trunks import parse_trunks
from workers.routing.failover import Failover
from workers.routing.outcomes import leg_outcome, local_cause
from workers.runtime.book import LegContext
from workers.signaling.targets import fails_over

BASE = CdrRecord(
    call_id="c1", correlation_id="k", scenario="campaign", trunk="a", from_uri="sip:x@h",
    to_uri="sip:+1555@h", started_at=10.0, first_provisional_at=None, answered_at=None,
    ended_at=12.0, final_status_code=None, disposition=Disposition.CONGESTION,
    hangup_reason=HangupReason.ERROR, hangup_by=HangupBy.LOCAL,
)


@pytest.mark.parametrize(("changes", "cause", "outcome"), [
    ({"answered_at": 11.0, "final_status_code": 200, "hangup_by": HangupBy.REMOTE},
     LocalCause.REMOTE_HANGUP, Outcome.USER),
    ({"answered_at": 11.0, "final_status_code": 200}, LocalCause.LOCAL_HANGUP, Outcome.USER),
    ({"disposition": Disposition.NO_ANSWER, "final_status_code": 487,
      "first_provisional_at": 10.5}, LocalCause.RING_TIMEOUT, Outcome.USER),
    ({"disposition": Disposition.CANCELLED, "final_status_code": 487},
     LocalCause.LOCAL_HANGUP, Outcome.USER),
    ({"error": "no response to INVITE (Timer B)"}, LocalCause.TRANSACTION_TIMEOUT,
     Outcome.NETWORK),
    ({"error": "connection lost"}, LocalCause.TRANSPORT_ERROR, Outcome.NETWORK),
    ({"final_status_code": 503, "hangup_by": HangupBy.REMOTE}, None, Outcome.CAPACITY),
    ({"final_status_code": 486, "disposition": Disposition.BUSY, "hangup_by": HangupBy.REMOTE},
     None, Outcome.USER),
    ({"final_status_code": 404, "disposition": Disposition.FAILED}, None, Outcome.CONFIG),
    # the far end's Q.850 cause 17 (user busy) on a 503: the callee, not the carrier
    ({"final_status_code": 503, "hangup_by": HangupBy.REMOTE, "reason_protocol": "Q.850",
      "reason_cause": 17}, None, Outcome.USER),
])
def test_a_cdr_gives_its_local_cause_and_outcome(
    changes: dict[str, Any], cause: LocalCause | None, outcome: Outcome
) -> None:
    record = replace(BASE, **changes)
    assert local_cause(record) is cause
    assert leg_outcome(record) is outcome


def test_a_cause_the_worker_knows_wins() -> None:
    assert leg_outcome(BASE, cause=LocalCause.EXPIRED) is Outcome.POLICY


TRUNKS = {
    "trunks": {"a": {"proxy": "127.0.0.1:5070", "domain": "a.example"},
               "b": {"proxy": "127.0.0.1:5080", "final_codes": [486, 603],
                     "busy_from_proxy": True}},
    "groups": {"fallback": {"members": ["a", "b"]}},
}


def test_groups_and_outcome_keys_are_read() -> None:
    trunks = parse_trunks(TRUNKS, source="trunks.toml")
    assert trunks.groups["fallback"].trunks == ("a", "b")
    rules = trunks.get("b").outcome_rules
    assert rules.busy_from_proxy and rules.final_codes == frozenset({486, 603})
    assert trunks.get("a").outcome_rules.final_codes >= {486, 600, 603}


@pytest.mark.parametrize(("document", "message"), [
    ({**TRUNKS, "groups": {"fallback": {"members": ["a", "c"]}}},
     "trunks.toml: groups.fallback.members[1]: no trunk 'c'"),
    ({**TRUNKS, "groups": {"fallback": {"members": ["a"], "order": 1}}},
     "trunks.toml: groups.fallback.order: unknown key"),
    ({"trunks": {"a": {"proxy": "h", "final_codes": [200]}}},
     "trunks.toml: trunks.a.final_codes: 200 is not a final failure status code"),
    ({"trunks": {"a": {"proxy": "h"}}, "routes": {}}, "trunks.toml: routes: unknown table"),
])
def test_a_bad_group_or_outcome_key_names_itself(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_trunks(document, source="trunks.toml")
    assert str(error.value).startswith(message)


def _handed(to: str, **request: Any) -> dict[str, Any]:
    trunks = parse_trunks(TRUNKS, source="trunks.toml")
    failover = Failover(trunks.get("a"), trunks.groups, lambda _trunk, _body: None)
    context = LegContext(leg_id="l", trunk="a", correlation_id="k", scenario="campaign",
                         request={"version": 1, "trunk": "a", "correlation_id": "k", "to": to,
                                  "route": "fallback", **request},
                         route="fallback", next_trunk="b")
    return failover.next_message(context)


def test_the_next_attempt_is_the_message_for_the_next_trunk() -> None:
    message = _handed("sip:+15551234@a.example", signaling_addr="127.0.0.1:9", transport="tcp")
    assert message == {"version": 1, "trunk": "b", "correlation_id": "k", "to": "+15551234",
                       "route": "fallback", "attempt": 2, "tried": ["a"]}
    # a URI the scheduler wrote stays as it is
    assert _handed("sip:alice@elsewhere.example")["to"] == "sip:alice@elsewhere.example"


@pytest.mark.parametrize(("changes", "moves_on"), [
    ({}, True),  # no final response: Timer B or a lost connection
    ({"final_status_code": 503}, True),
    ({"final_status_code": 503, "retry_after": 30.0}, False),  # the server asked us to wait
    ({"final_status_code": 503, "first_provisional_at": 10.5}, False),  # it rang first
    ({"final_status_code": 486, "disposition": Disposition.BUSY}, False),  # the callee spoke
    ({"final_status_code": 500}, False),
    ({"final_status_code": 200, "answered_at": 11.0}, False),
])
def test_an_attempt_moves_to_the_next_target_only_as_rfc_3263_says(
    changes: dict[str, Any], moves_on: bool
) -> None:
    record = replace(BASE, **changes)
    event_type = LegEnded if record.answered_at is not None else LegFailed
    event = event_type(call_id="c1", correlation_id="k", scenario="campaign", at=12.0,
                       status_code=record.final_status_code, cdr=record)
    assert fails_over(event) is moves_on
