"""Typed call outcomes: who is to blame for how a leg ended, and whether another trunk may try.

`Outcome` is bounded (user, network, capacity, config, policy) so routing, back-pressure and
reports can act on it; the raw status code and Reason cause stay next to it in the CDR, since
SIP <-> Q.850 mappings differ between vendors (docs/architecture pitfalls).

Decisions where the issue leaves room:
- A local cause, when given, decides: it is what ended the leg (our ring timer's CANCEL
  draws a 487, but the outcome is the unanswered ring, not the 487).
- A Q.850 cause in the final response's Reason header refines the status code when the cause
  is in `_Q850_OUTCOMES` (a 503 carrying cause 17 is a busy callee behind a gateway, a 486
  carrying cause 34 is a carrier out of circuits). A SIP-protocol Reason adds nothing.
- 2xx is `user`: the callee was reached, whatever ended the call afterwards.
- 3xx that reaches the classifier (not followed) is `config`: the trunk wants us elsewhere.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from sipstack.reason import Q850, ReasonValue


class Outcome(StrEnum):
    USER = "user"  # the callee decided: answered, busy, declined, no answer after ringing
    NETWORK = "network"  # no verdict: transaction timeout, transport error
    CAPACITY = "capacity"  # the carrier (or we) had no room: 503, 429, our CPS/concurrency
    CONFIG = "config"  # the trunk or the target is wrong: 401/403/404, 484, 416, bad target
    POLICY = "policy"  # someone's rule refused the call: 607/608, expired, rejected by us


class LocalCause(StrEnum):
    """How a leg ended when no final response (or not only one) tells it."""

    RING_TIMEOUT = "ring_timeout"  # our ring timer CANCELled an unanswered INVITE
    REMOTE_HANGUP = "remote_hangup"  # the far end sent BYE on an answered call
    LOCAL_HANGUP = "local_hangup"  # we sent BYE on an answered call (max duration, operator)
    TRANSACTION_TIMEOUT = "transaction_timeout"  # Timer B/F: nothing came back
    TRANSPORT_ERROR = "transport_error"  # connection refused/lost, ICMP unreachable
    CPS_LIMIT = "cps_limit"  # our own calls-per-second limit refused the dial
    CONCURRENCY_LIMIT = "concurrency_limit"  # our own concurrent-call limit refused the dial
    BAD_TARGET = "bad_target"  # the number or URI could not be dialled at all
    EXPIRED = "expired"  # the request was too old when its turn came
    REJECTED_BY_US = "rejected_by_us"  # our own policy refused it (DNC list, hours, ...)
    TRUNK_DOWN = "trunk_down"  # the trunk's OPTIONS health checks say it is down: not dialled


_LOCAL_OUTCOMES: dict[LocalCause, Outcome] = {
    LocalCause.RING_TIMEOUT: Outcome.USER,
    LocalCause.REMOTE_HANGUP: Outcome.USER,
    LocalCause.LOCAL_HANGUP: Outcome.USER,
    LocalCause.TRANSACTION_TIMEOUT: Outcome.NETWORK,
    LocalCause.TRANSPORT_ERROR: Outcome.NETWORK,
    LocalCause.CPS_LIMIT: Outcome.CAPACITY,
    LocalCause.CONCURRENCY_LIMIT: Outcome.CAPACITY,
    LocalCause.TRUNK_DOWN: Outcome.CAPACITY,
    LocalCause.BAD_TARGET: Outcome.CONFIG,
    LocalCause.EXPIRED: Outcome.POLICY,
    LocalCause.REJECTED_BY_US: Outcome.POLICY,
}

# Final status codes whose outcome does not depend on ringing.
_STATUS_OUTCOMES: dict[int, Outcome] = {
    401: Outcome.CONFIG,  # the trunk wants credentials we do not have (or rejects ours)
    403: Outcome.CONFIG,
    404: Outcome.CONFIG,
    407: Outcome.CONFIG,
    416: Outcome.CONFIG,
    484: Outcome.CONFIG,
    429: Outcome.CAPACITY,  # RFC 6357 overload / vendor rate limiting
    503: Outcome.CAPACITY,
    600: Outcome.USER,
    603: Outcome.USER,
    607: Outcome.POLICY,  # RFC 8197 unwanted
    608: Outcome.POLICY,  # RFC 8688 rejected by an intermediary
}
_NO_ANSWER = frozenset({408, 480})
_BUSY = 486
_CANCELLED = 487

# Q.850 causes (ITU-T Q.850 Table 1) that say more than the SIP code carrying them.
_Q850_OUTCOMES: dict[int, Outcome] = {
    1: Outcome.CONFIG,  # unallocated number
    3: Outcome.CONFIG,  # no route to destination
    17: Outcome.USER,  # user busy
    18: Outcome.USER,  # no user responding
    19: Outcome.USER,  # no answer from user
    21: Outcome.USER,  # call rejected
    28: Outcome.CONFIG,  # invalid number format
    34: Outcome.CAPACITY,  # no circuit/channel available
    38: Outcome.NETWORK,  # network out of order
    41: Outcome.NETWORK,  # temporary failure
    42: Outcome.CAPACITY,  # switching equipment congestion
    44: Outcome.CAPACITY,  # requested circuit not available
    47: Outcome.CAPACITY,  # resource unavailable
}


# 6xx are global failures (RFC 3261 §21.6: no other location will do better); 486 is a busy
# callee, 410 a number that is gone, 484 a number that is incomplete everywhere, 487 a
# request we cancelled ourselves (retrying it would ring a person we gave up on).
DEFAULT_FINAL_AT_CALLEE: frozenset[int] = frozenset(
    {410, 484, 486, 487, 600, 603, 604, 606, 607, 608}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeRules:
    """A trunk's say in classification and failover.

    `busy_from_proxy`: this trunk answers 486 itself when it has no room, so a 486 before
    any ringing is `capacity`, not a busy callee. `final_codes`: failure codes after which
    the callee has spoken and no other trunk may dial them again.
    """

    busy_from_proxy: bool = False
    final_codes: frozenset[int] = DEFAULT_FINAL_AT_CALLEE

    def __post_init__(self) -> None:
        object.__setattr__(self, "final_codes", frozenset(self.final_codes))
        for code in self.final_codes:
            _check_final(code, "final_codes")

    def retry_on_next_trunk(self, status: int | None, rang: bool) -> bool:
        return retry_on_next_trunk(
            status, rang, self.final_codes, busy_from_proxy=self.busy_from_proxy
        )


def _check_final(code: int, what: str) -> None:
    if type(code) is not int or not 300 <= code <= 699:
        raise ValueError(f"{what}: {code!r} is not a final failure status code (300-699)")


def classify_outcome(
    status: int | None,
    *,
    rang: bool = False,
    cause: LocalCause | None = None,
    reason: ReasonValue | None = None,
    rules: OutcomeRules | None = None,
) -> Outcome:
    """The outcome of one leg.

    `status`: the INVITE's final status code (None: none came); `rang`: any 180/181/182/183
    arrived; `cause`: the local cause when one ended the leg; `reason`: the primary Reason
    value of the final response (sipstack.reason.primary_reason).
    """
    if status is not None and (type(status) is not int or not 200 <= status <= 699):
        raise ValueError(f"final status {status!r} is not an integer 200-699")
    if cause is not None:
        return _LOCAL_OUTCOMES[LocalCause(cause)]
    if status is None:
        raise ValueError("no final status and no local cause: nothing to classify")
    if status < 300:
        return Outcome.USER
    if reason is not None and reason.protocol == Q850 and reason.cause in _Q850_OUTCOMES:
        return _Q850_OUTCOMES[reason.cause]
    return _status_outcome(status, rang, rules or OutcomeRules())


def _status_outcome(status: int, rang: bool, rules: OutcomeRules) -> Outcome:
    if status in _NO_ANSWER:
        return Outcome.USER if rang else Outcome.CAPACITY
    if status == _BUSY:
        return Outcome.CAPACITY if rules.busy_from_proxy and not rang else Outcome.USER
    if status == _CANCELLED:
        return Outcome.USER  # we cancelled: the caller side's choice, not the carrier's
    known = _STATUS_OUTCOMES.get(status)
    if known is not None:
        return known
    if status < 400:
        return Outcome.CONFIG
    if status >= 600:
        return Outcome.USER
    if status >= 500:
        return Outcome.NETWORK  # 500/502/504 and the rest: the path failed, not the callee
    return Outcome.CONFIG  # other 4xx: our request did not suit this trunk


def is_final_for_callee(outcome: Outcome) -> bool:
    """True when the callee (or a rule about them) has spoken: no other trunk may retry."""
    return outcome in (Outcome.USER, Outcome.POLICY)


def retry_on_next_trunk(
    status: int | None,
    rang: bool,
    final_codes: Collection[int] = DEFAULT_FINAL_AT_CALLEE,
    *,
    busy_from_proxy: bool = False,
) -> bool:
    """May the next trunk of the group dial this callee again after this final status?

    Never after a 2xx or 3xx (redirects are followed, not failed over), a code in
    `final_codes`, or a 408/480 that came after ringing (the callee was reached and did not
    pick up). A missing final response (None) is a failed path: retry. With
    `busy_from_proxy`, a 486 before any ringing is the trunk's own "no room": retry.
    """
    if status is None:
        return True
    if type(status) is not int or not 200 <= status <= 699:
        raise ValueError(f"final status {status!r} is not an integer 200-699")
    for code in final_codes:
        _check_final(code, "final_codes")
    if status < 400:
        return False
    if busy_from_proxy and status == _BUSY and not rang:
        return True
    if status in final_codes:
        return False
    return not (rang and status in _NO_ANSWER)
