"""What the carrier simulator does with each call: outcome weights, ring/hold times, timers."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sipstack.config import TimerConfig
from sipstack.reason import SESSION_TIMER_SIP_REASON
from sipstack.transport import Address


class Outcome(StrEnum):
    """How the simulated callee treats a new call."""

    ANSWER = "answer"  # 200 OK with SDP after ringing
    BUSY = "busy"  # 486 Busy Here after ringing
    NO_ANSWER = "no_answer"  # rings until the caller CANCELs (or max_ring passes: 480)
    REJECT = "reject"  # 603 Decline after ringing


REJECTION_STATUS: dict[Outcome, int] = {Outcome.BUSY: 486, Outcome.REJECT: 603}
NO_ANSWER_STATUS = 480  # a no-answer call still ringing after max_ring

SESSION_EXPIRED_REASON = SESSION_TIMER_SIP_REASON.render()
ACK_TIMEOUT_REASON = 'SIP;cause=408;text="ACK not received"'


def _answer_only() -> dict[Outcome, float]:
    return {Outcome.ANSWER: 1.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class CarrierConfig:
    """Settings of one carrier simulator; every duration is in seconds."""

    weights: Mapping[Outcome, float] = field(default_factory=_answer_only)
    ring: float = 1.0  # time between 180 Ringing and the final response
    hold: float | None = None  # answered calls: we BYE after this; None waits for the caller
    remote_hangup_reason: str | None = None  # Reason header value of our BYE after --hold
    challenge: bool = False  # answer the first INVITE with a digest 401
    realm: str = "carrier.invalid"
    username: str = "outbound"
    password: str = field(default="carrier", repr=False)
    session_expires: int | None = None  # Session-Expires;refresher=uac in the 200
    max_ring: float = 180.0  # a no-answer call that nobody CANCELs ends with 480 after this
    local_address: Address = ("127.0.0.1", 5060)  # Via sent-by and Contact of what we send
    user_agent: str = "outbound-carrier/0.1"
    timers: TimerConfig = field(default_factory=TimerConfig)

    def __post_init__(self) -> None:
        for outcome, weight in self.weights.items():
            if not isinstance(outcome, Outcome):
                raise ValueError(f"unknown outcome {outcome!r}")
            if weight < 0:
                raise ValueError(f"weight of {outcome.value} must be >= 0, got {weight}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one outcome weight must be positive")
        if self.ring < 0:
            raise ValueError(f"ring must be >= 0 seconds, got {self.ring}")
        if self.hold is not None and self.hold < 0:
            raise ValueError(f"hold must be >= 0 seconds, got {self.hold}")
        if self.session_expires is not None and self.session_expires < 90:
            raise ValueError(
                "session_expires must be at least 90 s (RFC 4028 Min-SE), "
                f"got {self.session_expires}"
            )
        if self.max_ring <= 0:
            raise ValueError(f"max_ring must be positive, got {self.max_ring}")


class OutcomePicker:
    """Draws an outcome per call in proportion to the weights."""

    def __init__(self, weights: Mapping[Outcome, float], rng: random.Random) -> None:
        self._outcomes = [o for o, w in weights.items() if w > 0]
        self._cumulative: list[float] = []
        total = 0.0
        for outcome in self._outcomes:
            total += weights[outcome]
            self._cumulative.append(total)
        self._total = total
        self._rng = rng

    def pick(self) -> Outcome:
        if len(self._outcomes) == 1:
            return self._outcomes[0]
        point = self._rng.random() * self._total
        for outcome, bound in zip(self._outcomes, self._cumulative, strict=True):
            if point < bound:
                return outcome
        return self._outcomes[-1]


def session_refresh_deadline(interval: float) -> float:
    """Seconds after a refresh by which the next one must come (RFC 4028 §10: the non-refresher
    ends the session at expiry minus min(32, interval/3))."""
    return interval - min(32.0, interval / 3)
