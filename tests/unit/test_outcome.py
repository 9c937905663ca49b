"""Typed outcomes (sipstack.outcome): the classifier table and the failover decision."""

from __future__ import annotations

import pytest

from sipstack.outcome import (
    DEFAULT_FINAL_AT_CALLEE,
    LocalCause,
    Outcome,
    OutcomeRules,
    classify_outcome,
    is_final_for_callee,
    retry_on_next_trunk,
)
from sipstack.reason import Q850, SIP, ReasonValue

U, N, C, G, P = Outcome.USER, Outcome.NETWORK, Outcome.CAPACITY, Outcome.CONFIG, Outcome.POLICY
PROXY_BUSY = OutcomeRules(busy_from_proxy=True)


@pytest.mark.parametrize(
    ("status", "rang", "cause", "rules", "expected"),
    [
        # user: the callee decided
        (200, False, None, None, U),
        (200, True, LocalCause.REMOTE_HANGUP, None, U),
        (200, True, LocalCause.LOCAL_HANGUP, None, U),
        (486, True, None, None, U),
        (486, False, None, None, U),  # a trunk that does not answer 486 for itself
        (600, False, None, None, U),
        (603, True, None, None, U),
        (480, True, None, None, U),
        (408, True, None, None, U),
        (487, True, LocalCause.RING_TIMEOUT, None, U),
        (None, True, LocalCause.RING_TIMEOUT, None, U),
        # network: no verdict
        (None, False, LocalCause.TRANSACTION_TIMEOUT, None, N),
        (None, True, LocalCause.TRANSPORT_ERROR, None, N),
        (500, False, None, None, N),
        (502, False, None, None, N),
        (504, True, None, None, N),
        # capacity
        (503, False, None, None, C),
        (503, True, None, None, C),
        (480, False, None, None, C),
        (408, False, None, None, C),
        (486, False, None, PROXY_BUSY, C),
        (486, True, None, PROXY_BUSY, U),  # it rang: the callee is busy after all
        (429, False, None, None, C),
        (None, False, LocalCause.CPS_LIMIT, None, C),
        (None, False, LocalCause.CONCURRENCY_LIMIT, None, C),
        # config
        (401, False, None, None, G),
        (403, False, None, None, G),
        (404, False, None, None, G),
        (407, False, None, None, G),
        (484, False, None, None, G),
        (416, False, None, None, G),
        (420, False, None, None, G),
        (302, False, None, None, G),
        (None, False, LocalCause.BAD_TARGET, None, G),
        # policy
        (607, False, None, None, P),
        (608, True, None, None, P),
        (None, False, LocalCause.EXPIRED, None, P),
        (None, False, LocalCause.REJECTED_BY_US, None, P),
    ],
)
def test_classifier_table(
    status: int | None,
    rang: bool,
    cause: LocalCause | None,
    rules: OutcomeRules | None,
    expected: Outcome,
) -> None:
    assert classify_outcome(status, rang=rang, cause=cause, rules=rules) is expected


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (503, ReasonValue(Q850, 17), U),  # busy callee behind a gateway that says 503
        (486, ReasonValue(Q850, 34), C),  # no circuit: the carrier, not the callee
        (480, ReasonValue(Q850, 19), U),  # no answer, even though no 180 reached us
        (404, ReasonValue(Q850, 1), G),
        (500, ReasonValue(Q850, 41), N),
        (503, ReasonValue(Q850, 16), C),  # a cause without a class of its own: the status
        (503, ReasonValue(SIP, 486), C),  # SIP-protocol Reason adds nothing
    ],
)
def test_a_q850_reason_cause_refines_the_status(
    status: int, reason: ReasonValue, expected: Outcome
) -> None:
    assert classify_outcome(status, reason=reason) is expected


def test_the_bounded_enum_has_exactly_five_values() -> None:
    assert {o.value for o in Outcome} == {"user", "network", "capacity", "config", "policy"}


@pytest.mark.parametrize(
    ("outcome", "final"), [(U, True), (P, True), (N, False), (C, False), (G, False)]
)
def test_final_for_callee(outcome: Outcome, final: bool) -> None:
    assert is_final_for_callee(outcome) is final


@pytest.mark.parametrize(
    ("status", "rang", "retry"),
    [
        (None, False, True),
        (None, True, True),
        (200, False, False),
        (302, False, False),
        (486, False, False),  # jambonz sbc-outbound#198: never re-dial a busy callee
        (603, True, False),
        (600, False, False),
        (607, False, False),
        (487, True, False),
        (480, True, False),
        (408, True, False),
        (480, False, True),
        (408, False, True),
        (503, False, True),
        (503, True, True),
        (429, False, True),
        (403, False, True),
        (404, False, True),
        (500, False, True),
    ],
)
def test_retry_on_next_trunk_with_the_default_final_codes(
    status: int | None, rang: bool, retry: bool
) -> None:
    assert retry_on_next_trunk(status, rang) is retry


def test_final_codes_are_per_trunk() -> None:
    # A trunk whose 404 really means "no such number anywhere", and whose 486 is its own.
    trunk = OutcomeRules(final_codes=frozenset({404, 603}), busy_from_proxy=True)
    assert retry_on_next_trunk(404, False, trunk.final_codes) is False
    assert retry_on_next_trunk(486, False, trunk.final_codes) is True
    assert OutcomeRules().final_codes == DEFAULT_FINAL_AT_CALLEE


@pytest.mark.parametrize(("rang", "retry"), [(False, True), (True, False)])
def test_a_proxy_486_fails_over_only_before_ringing(rang: bool, retry: bool) -> None:
    rules = OutcomeRules(busy_from_proxy=True)  # default final codes, 486 among them
    assert rules.retry_on_next_trunk(486, rang) is retry
    assert is_final_for_callee(classify_outcome(486, rang=rang, rules=rules)) is not retry
    assert OutcomeRules().retry_on_next_trunk(486, False) is False


@pytest.mark.parametrize("bad", [100, 180, 199, 700, "486"])
def test_a_non_final_status_is_an_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("'", ".")):
        classify_outcome(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="final status"):
        retry_on_next_trunk(bad, False)  # type: ignore[arg-type]


def test_bad_final_codes_are_named() -> None:
    with pytest.raises(ValueError, match="final_codes: 200"):
        OutcomeRules(final_codes=frozenset({200}))
    with pytest.raises(ValueError, match="final_codes: 180"):
        retry_on_next_trunk(503, False, {180})


def test_nothing_to_classify_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to classify"):
        classify_outcome(None)
