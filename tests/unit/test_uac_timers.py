"""The deadline heap under the core: ordering, lazy cancellation, callbacks that reschedule."""

from __future__ import annotations

from sipstack.timers import TimerHeap


def test_handles_fire_in_time_order_ties_by_insertion() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    for when, name in ((3.0, "c"), (1.0, "a"), (2.0, "b1"), (2.0, "b2")):
        heap.schedule(when, lambda arg, now: fired.append(arg), name)
    assert heap.next_deadline() == 1.0
    assert heap.run_due(2.0) == 3
    assert fired == ["a", "b1", "b2"]
    assert heap.next_deadline() == 3.0


def test_cancelled_handles_never_fire_and_do_not_count_as_deadlines() -> None:
    heap = TimerHeap()
    fired: list[int] = []
    first = heap.schedule(1.0, lambda arg, now: fired.append(arg), 1)
    heap.schedule(5.0, lambda arg, now: fired.append(arg), 5)
    first.cancel()
    assert first.arg is None  # a cancelled entry pins nothing
    assert heap.next_deadline() == 5.0
    heap.run_due(10.0)
    assert fired == [5]
    assert heap.next_deadline() is None


def test_a_callback_may_schedule_more_work_that_is_already_due() -> None:
    heap = TimerHeap()
    seen: list[float] = []

    def chain(count: int, now: float) -> None:
        seen.append(now)
        if count:
            heap.schedule(now, chain, count - 1)

    heap.schedule(1.0, chain, 2)
    heap.run_due(1.0)
    assert seen == [1.0, 1.0, 1.0]


def test_mostly_cancelled_heaps_are_compacted() -> None:
    heap = TimerHeap()
    handles = [heap.schedule(float(i), lambda arg, now: None, None) for i in range(5000)]
    for handle in handles[:4900]:
        handle.cancel()
    for i in range(5000):
        heap.schedule(10_000.0 + i, lambda arg, now: None, None)
    assert len(heap) < 6000
    assert heap.next_deadline() == 4900.0
