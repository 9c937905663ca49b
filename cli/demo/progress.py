"""The demo's live view: counts calls from their stream events and draws a progress line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from workers.events.stream import StreamEvent

BAR_WIDTH = 24
TERMINAL = frozenset({"failed", "cancelled", "ended"})


@dataclass
class CampaignProgress:
    """What the campaign's calls have done so far, one correlation_id per call."""

    total: int
    placed: set[str] = field(default_factory=set)
    ringing: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    finished: dict[str, str] = field(default_factory=dict)  # correlation_id -> terminal state
    seen_events: set[str] = field(default_factory=set)

    def add(self, event: StreamEvent) -> bool:
        """Count one event; False for a repeat (streams deliver at least once)."""
        if event.event_id in self.seen_events:
            return False
        self.seen_events.add(event.event_id)
        key = event.correlation_id
        if event.state == "invited":
            self.placed.add(key)
        elif event.state == "provisional":
            self.ringing.add(key)
        elif event.state == "established":
            self.answered.add(key)
        elif event.state in TERMINAL:
            self.placed.add(key)  # a leg that failed before its INVITE still counts as tried
            self.finished[key] = event.state
        return True

    @property
    def done(self) -> bool:
        return len(self.finished) >= self.total

    @property
    def failed(self) -> int:
        """Ended without an answer (busy, rejected, no answer, errors)."""
        return sum(1 for key in self.finished if key not in self.answered)

    @property
    def in_progress(self) -> int:
        return len(self.placed) - len(self.finished)

    def line(self) -> str:
        filled = round(BAR_WIDTH * len(self.finished) / max(self.total, 1))
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {len(self.finished)}/{self.total} done | placed {len(self.placed)} "
            f"answered {len(self.answered)} failed {self.failed} in progress {self.in_progress}"
        )


def describe(event: StreamEvent) -> str:
    """One event as a terminal line: time, call, state, status and reason; a terminal event
    also says how the call ended (the CDR's disposition and hangup reason, as the report)."""
    at = datetime.fromtimestamp(event.at, UTC).strftime("%H:%M:%S.%f")[:-3] if event.at else ""
    status = "" if event.status_code is None else str(event.status_code)
    reason = f"  {event.reason}" if event.reason else ""
    outcome = event.outcome or {}
    ended = ""
    if outcome.get("disposition"):
        ended = f"  [{outcome['disposition']}, {outcome.get('hangup_reason', '')}]"
    return f"  {at}  {event.correlation_id:<14} {event.state:<11} {status:>3}{reason}{ended}"


class ProgressPrinter:
    """Event lines scroll above one progress line that is redrawn in place on a terminal;
    elsewhere (a pipe, CI) the progress line is printed every `every` finished calls."""

    def __init__(self, progress: CampaignProgress, out: TextIO, *, show_events: bool = True,
                 every: int = 5) -> None:
        self.progress = progress
        self.out = out
        self.show_events = show_events
        self.interactive = out.isatty()
        self._every = max(1, every)
        self._last_printed = -1
        self._drawn = False

    def event(self, event: StreamEvent) -> None:
        if not self.progress.add(event):
            return
        if self.show_events:
            self._clear()
            self.out.write(describe(event) + "\n")
        self.refresh()

    def refresh(self) -> None:
        if self.interactive:
            self._clear()
            self.out.write(self.progress.line())
            self._drawn = True
        else:
            finished = len(self.progress.finished)
            if finished != self._last_printed and (finished % self._every == 0
                                                   or self.progress.done):
                self.out.write(self.progress.line() + "\n")
                self._last_printed = finished
        self.out.flush()

    def close(self) -> None:
        if self.interactive and self._drawn:
            self.out.write("\n")
        elif not self.interactive and self._last_printed != len(self.progress.finished):
            self.out.write(self.progress.line() + "\n")
        self.out.flush()

    def _clear(self) -> None:
        if self.interactive and self._drawn:
            self.out.write("\r\x1b[2K")
            self._drawn = False
