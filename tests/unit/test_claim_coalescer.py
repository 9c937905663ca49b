"""The claim coalescer's buffering: batches by size and by delay (a fake event loop whose
timers fire only when the test moves its clock), acks only after the batch was taken, a
failed batch requeued whole, acks handed back to the loop's thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from tests.workers_harness import wait_for
from workers.runtime.claims import ClaimCoalescer, InlineScheduler, Settle


@dataclass
class Timer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    """kombu's Hub as the coalescer uses it, driven by the test: `advance` fires the timers
    that are due, `run_ready` runs what other threads handed over with `call_soon`."""

    now: float = 1000.0
    timers: list[Timer] = field(default_factory=list)
    ready: list[Callable[[], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def call_soon(self, callback: Callable[[], None]) -> None:
        with self.lock:
            self.ready.append(callback)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t.at <= self.now and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()

    def run_ready(self) -> int:
        with self.lock:
            ready, self.ready = self.ready, []
        for callback in ready:
            callback()
        return len(ready)

    def clock(self) -> float:
        return self.now


@dataclass
class Message:
    """A broker delivery: records what was done to it, and on which thread."""

    name: str
    settled: list[tuple[str, str, str]]

    def ack(self) -> None:
        self.settled.append((self.name, "ack", threading.current_thread().name))

    def requeue(self) -> None:
        self.settled.append((self.name, "requeue", threading.current_thread().name))


class Intake:
    """Stands in for DialIntake.take: remembers each batch and what was settled before it."""

    def __init__(self, settled: list[tuple[str, str, str]],
                 verdict: Callable[[bytes], Settle] = lambda raw: Settle.ACK) -> None:
        self.batches: list[tuple[list[bytes], float]] = []
        self.settled_before: list[int] = []
        self._settled = settled
        self._verdict = verdict

    def __call__(self, raws: Sequence[bytes], enqueued_at: float) -> list[Settle]:
        self.settled_before.append(len(self._settled))
        self.batches.append((list(raws), enqueued_at))
        return [self._verdict(raw) for raw in raws]


def new_settled() -> list[tuple[str, str, str]]:
    return []


def deliver(coalescer: ClaimCoalescer, settled: list[tuple[str, str, str]], *names: str) -> None:
    for name in names:
        coalescer.add(name.encode(), Message(name, settled))


def test_a_full_buffer_is_taken_at_once_and_acked_after() -> None:
    loop, settled = FakeLoop(), new_settled()
    intake = Intake(settled)
    coalescer = ClaimCoalescer(intake, loop, batch_size=3, delay=0.005, threaded=False,
                               clock=loop.clock)
    deliver(coalescer, settled, "a", "b")
    assert intake.batches == [] and settled == []
    deliver(coalescer, settled, "c")
    assert intake.batches == [([b"a", b"b", b"c"], 1000.0)]
    assert intake.settled_before == [0]  # nothing acknowledged before the batch was taken
    assert [(name, how) for name, how, _ in settled] == [("a", "ack"), ("b", "ack"), ("c", "ack")]
    assert all(timer.cancelled for timer in loop.timers)  # the delay timer was disarmed


def test_the_delay_takes_a_partial_batch_and_not_before() -> None:
    loop, settled = FakeLoop(), new_settled()
    intake = Intake(settled)
    delay = 0.0625  # steps of a sixteenth and its halves add up exactly in binary
    coalescer = ClaimCoalescer(intake, loop, batch_size=100, delay=delay, threaded=False,
                               clock=loop.clock)
    deliver(coalescer, settled, "a")
    loop.advance(delay / 2)
    deliver(coalescer, settled, "b")
    loop.advance(delay / 4)  # three quarters of the delay after the first: still waiting
    assert intake.batches == []
    loop.advance(delay / 4)  # the delay after the first
    assert intake.batches == [([b"a", b"b"], 1000.0)]
    assert len(settled) == 2
    deliver(coalescer, settled, "c")  # a new batch, a new timer from its first message
    loop.advance(delay / 2)
    assert len(intake.batches) == 1
    loop.advance(delay / 2)
    assert intake.batches[1][0] == [b"c"]


def test_verdicts_are_applied_per_delivery() -> None:
    loop, settled = FakeLoop(), new_settled()
    intake = Intake(settled, lambda raw: Settle.REQUEUE if raw == b"b" else Settle.ACK)
    coalescer = ClaimCoalescer(intake, loop, batch_size=3, threaded=False, clock=loop.clock)
    deliver(coalescer, settled, "a", "b", "c")
    assert [(name, how) for name, how, _ in settled] == [
        ("a", "ack"), ("b", "requeue"), ("c", "ack")]


def test_a_batch_that_fails_is_requeued_whole() -> None:
    loop, settled = FakeLoop(), new_settled()

    def failing(raws: Sequence[bytes], enqueued_at: float) -> list[Settle]:
        raise RuntimeError("PostgreSQL said no")

    coalescer = ClaimCoalescer(failing, loop, batch_size=2, threaded=False, clock=loop.clock)
    deliver(coalescer, settled, "a", "b")
    assert [(name, how) for name, how, _ in settled] == [("a", "requeue"), ("b", "requeue")]


def test_closing_requeues_what_is_buffered() -> None:
    loop, settled = FakeLoop(), new_settled()
    intake = Intake(settled)
    coalescer = ClaimCoalescer(intake, loop, batch_size=10, threaded=False, clock=loop.clock)
    deliver(coalescer, settled, "a", "b")
    coalescer.close()
    assert intake.batches == []
    assert [(name, how) for name, how, _ in settled] == [("a", "requeue"), ("b", "requeue")]
    loop.advance(1.0)  # the timer was cancelled: nothing more happens
    assert intake.batches == []


def test_threaded_batches_are_acked_on_the_loop_thread_and_the_next_batch_waits() -> None:
    loop, settled = FakeLoop(), new_settled()
    release = threading.Event()
    taken: list[list[bytes]] = []
    threads: list[str] = []

    def take(raws: Sequence[bytes], enqueued_at: float) -> list[Settle]:
        threads.append(threading.current_thread().name)
        taken.append(list(raws))
        release.wait(10)
        return [Settle.ACK] * len(raws)

    coalescer = ClaimCoalescer(take, loop, batch_size=2, clock=loop.clock)
    deliver(coalescer, settled, "a", "b")  # full: handed to the claims thread
    wait_for(lambda: taken, 5, "the first batch to be taken")
    deliver(coalescer, settled, "c", "d", "e")  # wait while the first batch is in flight
    loop.advance(1.0)
    assert taken == [[b"a", b"b"]] and coalescer.buffered == 3
    release.set()
    wait_for(lambda: loop.ready, 5, "the batch's acks to be handed to the loop")
    assert settled == []  # not acked from the claims thread
    loop.run_ready()  # settles a, b and takes the next batch at once
    here = threading.current_thread().name
    assert settled == [("a", "ack", here), ("b", "ack", here)]
    wait_for(lambda: loop.ready, 5, "the second batch")
    loop.run_ready()
    assert taken[1] == [b"c", b"d"] and threads[0].startswith("claims")
    coalescer.close()  # the rest was buffered: requeued
    assert [(n, how) for n, how, _ in settled[2:]] == [("c", "ack"), ("d", "ack"), ("e", "requeue")]


def test_without_an_event_loop_every_delivery_is_taken_at_once() -> None:
    settled: list[tuple[str, str, str]] = []
    intake = Intake(settled)
    coalescer = ClaimCoalescer(intake, InlineScheduler(), batch_size=1, threaded=False)
    deliver(coalescer, settled, "a", "b")
    assert [raws for raws, _ in intake.batches] == [[b"a"], [b"b"]]
    assert len(settled) == 2


def test_bad_sizes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ClaimCoalescer(Intake([]), FakeLoop(), batch_size=0)
