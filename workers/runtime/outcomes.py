"""What became of dial messages: one leg (`DialOutcome`) or a batch of legs (`BatchOutcome`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class DialOutcome:
    """What became of one dial message."""

    status: str  # accepted | duplicate | retry | requeue | failed | expired | cancelled | rejected
    detail: str = ""
    retry_after: float = 0.0
    call_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchOutcome:
    """What became of the legs of one dial message (one leg or a batch)."""

    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0  # cancelled by the scheduler before a worker took the message
    rejected: int = 0  # JSON messages refused before anything was stored
    retry: list[tuple[str, str]] = field(default_factory=list)  # (leg id, correlation_id)
    retry_after: float = 0.0
    requeue: str = ""  # set: this worker cannot take the message at all (why)
    detail: str = ""

    def note_failed(self, why: str) -> None:
        self.failed += 1
        self.detail = why

    def retry_later(self, legs: Sequence[tuple[Any, str, str]], after: float, why: str) -> None:
        self.retry.extend((text, correlation_id) for _, text, correlation_id in legs)
        self.retry_after = max(self.retry_after, after)
        self.detail = why

    def summary(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "failed": self.failed, "expired": self.expired, "cancelled": self.cancelled,
                "rejected": self.rejected,
                "retried": len(self.retry)}
