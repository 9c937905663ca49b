"""Logging for every `outbound` process: JSON lines or readable text, with call context fields."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

CALL_FIELDS = ("call_id", "correlation_id", "trunk")
LOG_FORMATS = ("text", "json")

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
    ) -> None:
        fields = {"call_id": call_id, "correlation_id": correlation_id, "trunk": trunk}
        super().__init__(logger, {k: v for k, v in fields.items() if v})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def call_logger(
    name: str, *, call_id: str = "", correlation_id: str = "", trunk: str = ""
) -> CallLoggerAdapter:
    return CallLoggerAdapter(
        logging.getLogger(name), call_id=call_id, correlation_id=correlation_id, trunk=trunk
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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [trunk=… call_id=… correlation_id=… key=value]` for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _extra_fields(record)
        ordered: list[tuple[str, Any]] = [
            (k, fields.pop(k)) for k in ("trunk", "call_id", "correlation_id") if k in fields
        ]
        ordered.extend(sorted(fields.items()))
        suffix = " ".join(f"{k}={v}" for k, v in ordered)
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
            + (f" [{suffix}]" if suffix else "")
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    log_format: str = "text", level: str | int = "INFO", stream: IO[str] | None = None
) -> logging.Handler:
    """Install one handler on the root logger (replacing ours from an earlier call)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CallContextFilter())
    handler.set_name("outbound")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "outbound":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
