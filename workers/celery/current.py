"""The worker runtime this process is running, set by the bootstep, read by tasks and consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.runtime.worker import WorkerRuntime

_runtime: WorkerRuntime | None = None


def current_runtime() -> WorkerRuntime | None:
    """The running worker's runtime (None outside a started `outbound worker`)."""
    return _runtime


def set_current_runtime(runtime: WorkerRuntime | None) -> WorkerRuntime | None:
    """Make `runtime` the current one; returns the one it replaces."""
    global _runtime
    previous, _runtime = _runtime, runtime
    return previous
