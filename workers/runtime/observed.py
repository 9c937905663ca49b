"""A running worker as observability sees it (workers.observability.attach.ObservedRuntime):
live legs, core totals, backlogs, SIP message taps. Observability imports nothing of the
runtime; the runtime hands it this view of its parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models import outbox_ops
from workers.events.publisher import EventPublisher
from workers.observability.attach import SignalingTap
from workers.runtime.recorder import LegRecorder
from workers.signaling.manager import SignalingService


@dataclass(frozen=True, slots=True)
class ObservedWorker:
    signaling: SignalingService
    recorder: LegRecorder
    publisher: EventPublisher
    engine: Engine
    trunk: str
    owner: str

    def live_leg_count(self) -> int:
        return len(self.signaling.manager.live_legs())

    def core_stats(self) -> dict[str, int]:
        return self.signaling.manager.all_stats()

    def recorder_backlog(self) -> int:
        return self.recorder.backlog

    def events_backlogged(self) -> bool:
        return self.publisher.backlogged

    def unpublished_events(self) -> int:
        # One attempt, no retries (not Repository.run): a scrape must answer.
        with Session(self.engine) as session:
            return outbox_ops.count_unpublished(session, trunk=self.trunk, workers=[self.owner])

    def subscribe_signaling(self, sent: SignalingTap, received: SignalingTap) -> None:
        signaling = self.signaling

        def on_loop() -> None:
            hooks = signaling.manager.hooks
            hooks.subscribe("on_signaling_sent", sent)
            hooks.subscribe("on_signaling_received", received)

        signaling.call(on_loop).result(timeout=10)
