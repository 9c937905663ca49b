"""Redis stream entries: one DialEvent as a stream entry (`StreamEvent`), its text fields and
timestamps, and the Redis errors that mean "not there right now".

Delivery is at least once. An event is appended with `XADD {prefix}:events:{trunk} MAXLEN ~ N`;
when Redis does not answer, the event goes to an outbox (PostgreSQL, or a bounded in-memory
buffer when PostgreSQL is down too) and everything after it follows it there, so a leg's events
always reach the stream in order (workers.events.publisher). A retried publish may append an
entry twice; the `event_id` (`<leg>:<seq>`) is the key to drop repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

# `expired`: a message past its not_after (a leg and CDR, no INVITE); `rejected`: a message
# refused before any leg existed (docs/dial-message.md).
TERMINAL_STATES = frozenset({"failed", "cancelled", "ended", "expired", "rejected"})
STREAM_FIELDS = (
    "event_id", "seq", "state", "call_id", "correlation_id", "scenario", "trunk",
    "status_code", "reason", "at",
)
OUTCOME_FIELDS = (
    "disposition", "hangup_reason", "hangup_by", "final_status_code", "reason_protocol",
    "reason_cause", "reason_text", "retry_after",
    # typed outcome and routing (docs/events.md, docs/routing.md)
    "outcome", "attempt", "final", "next_trunk", "routed_via",
)
# Errors that mean "Redis is not there right now", as opposed to a bad command.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    ConnectionError,
    OSError,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """One DialEvent as it appears on the stream."""

    trunk: str
    leg_id: str
    seq: int
    state: str
    call_id: str
    correlation_id: str
    scenario: str
    status_code: int | None = None
    reason: str = ""
    at: float = 0.0
    # How the call ended (terminal events only; sipstack.cdr.Outcome.as_text): disposition,
    # hangup_reason, hangup_by, final_status_code, reason_protocol, reason_cause, reason_text,
    # retry_after (seconds of a 503/429 Retry-After, for workers.coordination.backpressure);
    # outcome, attempt, final, next_trunk, routed_via (workers.runtime.book.routing_fields).
    outcome: dict[str, str] | None = None

    @property
    def event_id(self) -> str:
        return f"{self.leg_id}:{self.seq}"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def fields(self) -> dict[str, str]:
        """The stream entry: every value as text (an absent status code is empty)."""
        return {
            "event_id": self.event_id,
            "seq": str(self.seq),
            "state": self.state,
            "call_id": self.call_id,
            "correlation_id": self.correlation_id,
            "scenario": self.scenario,
            "trunk": self.trunk,
            "status_code": "" if self.status_code is None else str(self.status_code),
            "reason": self.reason,
            "at": format_at(self.at),
            **(self.outcome or {}),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "trunk": self.trunk, "leg_id": self.leg_id, "seq": self.seq, "state": self.state,
            "call_id": self.call_id, "correlation_id": self.correlation_id,
            "scenario": self.scenario, "status_code": self.status_code, "reason": self.reason,
            "at": self.at, "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamEvent:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> StreamEvent:
        """Read a stream entry back (what a consumer gets from XREAD)."""
        leg_id, _, seq = fields["event_id"].rpartition(":")
        status = fields.get("status_code", "")
        return cls(
            trunk=fields.get("trunk", ""),
            leg_id=leg_id,
            seq=int(fields.get("seq") or seq),
            state=fields["state"],
            call_id=fields.get("call_id", ""),
            correlation_id=fields.get("correlation_id", ""),
            scenario=fields.get("scenario", ""),
            status_code=int(status) if status else None,
            reason=fields.get("reason", ""),
            at=parse_at(fields.get("at", "")),
            outcome={name: fields[name] for name in OUTCOME_FIELDS if name in fields} or None,
        )


def format_at(at: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds ('2024-05-01T10:00:00.123456Z')."""
    # isoformat is twice as fast as strftime; "+00:00" is always the last six characters
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_at(text: str) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def decode_fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
