"""Logging for every `outbound` process: JSON lines or readable text, with call context fields.

Lines about a call carry `call_id`, `correlation_id` and `trunk` (and `leg_id` where known):
from `call_context` (a thread or asyncio task serving one call), `call_logger` (a logger bound
to one call) or `extra=call_fields(...)` (code serving many calls at once, one line each).
With `background=True` the lines are written by a thread of their own: a slow log reader
(a full pipe) then never stalls the caller, such as the signaling loop.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import copy
import json
import logging
import logging.handlers
import queue
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

CALL_FIELDS = ("call_id", "correlation_id", "trunk", "leg_id")
LOG_FORMATS = ("text", "json")
# Lines waiting for the background writer; beyond this they are dropped (and counted) rather
# than stall the process or grow its memory without bound.
BACKGROUND_QUEUE_SIZE = 100_000
# Celery's loggers that write a line per task message: at hundreds of dials a second they
# drown the call lines, and Flower shows the same from task events. Warnings and errors only.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
# Libraries whose DEBUG lines are about their own machinery: --log-level DEBUG is for ours.
LIBRARY_LOGGERS = ("celery", "kombu", "amqp", "urllib3")

_call_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "outbound_call_context", default={}  # noqa: B039 - never mutated, always replaced
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


@contextmanager
def call_context(**fields: str | None) -> Iterator[None]:
    """Attach call_id / correlation_id / trunk to every log line in this context (thread or task).

    Fields given as None or "" are left out; nesting adds to the outer context.
    """
    unknown = set(fields) - set(CALL_FIELDS)
    if unknown:
        raise TypeError(f"unknown call context field(s): {', '.join(sorted(unknown))}")
    merged = dict(_call_context.get())
    merged.update({k: v for k, v in fields.items() if v})
    token = _call_context.set(merged)
    try:
        yield
    finally:
        _call_context.reset(token)


def current_call_context() -> dict[str, str]:
    return dict(_call_context.get())


def call_fields(
    *, call_id: str = "", correlation_id: str = "", trunk: str = "", leg_id: str = ""
) -> dict[str, str]:
    """`extra=` for one line about a call; empty values are left out."""
    fields = {"call_id": call_id, "correlation_id": correlation_id, "trunk": trunk,
              "leg_id": leg_id}
    return {k: v for k, v in fields.items() if v}


class CallContextFilter(logging.Filter):
    """Copy the context's call fields onto each record unless the record already has them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _call_context.get().items():
            if getattr(record, name, None) in (None, ""):
                setattr(record, name, value)
        return True


class CallLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to one call, for code (the asyncio loop) that serves many calls at once."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        call_id: str = "",
        correlation_id: str = "",
        trunk: str = "",
        leg_id: str = "",
    ) -> None:
        super().__init__(logger, call_fields(
            call_id=call_id, correlation_id=correlation_id, trunk=trunk, leg_id=leg_id))

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def call_logger(
    name: str, *, call_id: str = "", correlation_id: str = "", trunk: str = "", leg_id: str = ""
) -> CallLoggerAdapter:
    return CallLoggerAdapter(
        logging.getLogger(name), call_id=call_id, correlation_id=correlation_id, trunk=trunk,
        leg_id=leg_id,
    )


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_ATTRS}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, call fields, any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [trunk=… call_id=… correlation_id=… key=value]` for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _extra_fields(record)
        ordered: list[tuple[str, Any]] = [
            (k, fields.pop(k)) for k in ("trunk", "call_id", "correlation_id", "leg_id")
            if k in fields
        ]
        ordered.extend(sorted(fields.items()))
        suffix = " ".join(f"{k}={v}" for k, v in ordered)
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
            + (f" [{suffix}]" if suffix else "")
        )
        exception = _exception_text(self, record)
        if exception:
            line += "\n" + exception
        return line


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The traceback of a record: formatted here, or already (by the background handler)."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or ""


class _Writer(logging.handlers.QueueListener):
    """The writer thread; its stop signal waits for room in a full queue instead of failing."""

    def __init__(
        self, records: queue.Queue[logging.LogRecord | None], target: logging.Handler
    ) -> None:
        super().__init__(records, target)
        self._records = records

    def enqueue_sentinel(self) -> None:
        with contextlib.suppress(queue.Full):  # a writer stuck that long is not waited for
            self._records.put(None, timeout=10)


class BackgroundHandler(logging.handlers.QueueHandler):
    """Hands records to a writer thread; the caller only merges the message and its call fields.

    The queue is bounded: when the writer cannot keep up, lines are dropped and counted, and
    the writer says how many before the next line it writes.
    """

    def __init__(self, target: logging.Handler, size: int = BACKGROUND_QUEUE_SIZE) -> None:
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(size)
        super().__init__(self._queue)
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        self.listener = _Writer(self._queue, target)
        self.listener.start()
        self._running = True

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The arguments are merged now (they may change later); JSON or text is made by the
        # writer thread. The call fields are already on the record (the filter ran here).
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = logging.Formatter().formatException(record.exc_info)
            prepared.exc_info = None
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.dropped:
            self._report_dropped()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._dropped_lock:
                self.dropped += 1

    def _report_dropped(self) -> None:
        with self._dropped_lock:
            dropped = self.dropped
            try:
                self._queue.put_nowait(logging.makeLogRecord({
                    "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                    "msg": f"{dropped} log line(s) dropped: the log writer could not keep up",
                }))
            except queue.Full:
                return
            self.dropped -= dropped

    def close(self) -> None:
        """Write what is queued, then stop the writer thread (once)."""
        with self._dropped_lock:
            running, self._running = self._running, False
        if running:
            self.listener.stop()
        super().close()


def configure_logging(
    log_format: str = "text",
    level: str | int = "INFO",
    stream: IO[str] | None = None,
    *,
    background: bool = False,
) -> logging.Handler:
    """Install one handler on the root logger (replacing ours from an earlier call).

    Python warnings become log lines too (a JSON collector gets no stray text). Celery's
    per-task lines (PER_TASK_LOGGERS) show warnings only; the libraries' (LIBRARY_LOGGERS)
    go no lower than INFO.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                         f"got {level!r}")
    writer = logging.StreamHandler(stream if stream is not None else sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler: logging.Handler = writer
    if background:
        handler = BackgroundHandler(writer)
        atexit.register(handler.close)
    handler.addFilter(CallContextFilter())
    handler.set_name("outbound")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "outbound":
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return handler
