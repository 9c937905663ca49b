"""One heap of deadlines for every timer of the core, with O(1) lazy cancellation."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

TimerCallback = Callable[[Any, float], None]


class TimerHandle:
    """A scheduled deadline; `cancel()` marks it dead and the heap drops it when it surfaces."""

    __slots__ = ("arg", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: TimerCallback, arg: Any) -> None:
        self.when = when
        self.callback = callback
        self.arg = arg
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # Drop the references so a cancelled entry waiting in the heap pins no leg.
        self.arg = None


class TimerHeap:
    """Deadlines ordered by time (ties by insertion order)."""

    __slots__ = ("_heap", "_pushes_since_compaction", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._pushes_since_compaction = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, when: float, callback: TimerCallback, arg: Any = None) -> TimerHandle:
        handle = TimerHandle(when, callback, arg)
        heapq.heappush(self._heap, (when, next(self._sequence), handle))
        # Checking once per half-heap-size pushes keeps compaction O(1) amortised per push.
        self._pushes_since_compaction += 1
        if self._pushes_since_compaction >= max(1024, len(self._heap) // 2):
            self._pushes_since_compaction = 0
            self._compact_if_mostly_cancelled()
        return handle

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> TimerHandle | None:
        """The earliest live handle due at `now`, removed from the heap; None when none is due."""
        heap = self._heap
        while heap:
            when, _, handle = heap[0]
            if handle.cancelled:
                heapq.heappop(heap)
                continue
            if when > now:
                return None
            heapq.heappop(heap)
            return handle
        return None

    def run_due(self, now: float) -> int:
        """Fire every handle due at `now` (including ones scheduled by callbacks); return count."""
        fired = 0
        while (handle := self.pop_due(now)) is not None:
            handle.cancelled = True
            arg = handle.arg
            handle.arg = None
            handle.callback(arg, now)
            fired += 1
        return fired

    def _compact_if_mostly_cancelled(self) -> None:
        live = [entry for entry in self._heap if not entry[2].cancelled]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap = live
