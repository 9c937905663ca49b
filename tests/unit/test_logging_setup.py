"""Logging: JSON lines and text carry call_id, correlation_id and trunk on every call line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import warnings
from collections.abc import Iterator

import pytest

from tests.waiting import wait_until
from workers.observability.log_format import (
    PER_TASK_LOGGERS,
    BackgroundHandler,
    call_context,
    call_fields,
    call_logger,
    configure_logging,
    current_call_context,
)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield stream
    for handler in list(root.handlers):
        if handler.get_name() == "outbound":
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_call_fields_from_the_context(output: io.StringIO) -> None:
    configure_logging("json", "DEBUG", stream=output)
    log = logging.getLogger("outbound.test")
    with call_context(call_id="c1@host", correlation_id="order-7", trunk="carrier-a"):
        log.info("INVITE sent to %s", "10.0.0.1:5060")
        with call_context(call_id="c2@host"):
            log.debug("nested")
    log.info("no call here")
    first, nested, outside = lines(output)
    assert first["message"] == "INVITE sent to 10.0.0.1:5060"
    assert (first["call_id"], first["correlation_id"], first["trunk"]) == (
        "c1@host", "order-7", "carrier-a")
    assert first["level"] == "info" and first["logger"] == "outbound.test"
    assert nested["call_id"] == "c2@host" and nested["trunk"] == "carrier-a"
    assert "call_id" not in outside


def test_adapter_binds_a_call_for_code_serving_many_calls(output: io.StringIO) -> None:
    configure_logging("json", stream=output)
    leg_log = call_logger("outbound.leg", call_id="c9", correlation_id="k9", trunk="t9")
    leg_log.warning("ring timeout, cancelling", extra={"status": 180})
    (entry,) = lines(output)
    assert entry["call_id"] == "c9" and entry["trunk"] == "t9" and entry["status"] == 180


def test_exceptions_are_kept_inside_the_json_line(output: io.StringIO) -> None:
    configure_logging("json", stream=output)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (entry,) = lines(output)
    assert "RuntimeError: boom" in str(entry["exception"])
    assert len(output.getvalue().splitlines()) == 1


def test_text_format_is_readable_with_call_fields_at_the_end(output: io.StringIO) -> None:
    configure_logging("text", stream=output)
    with call_context(call_id="abc", trunk="tr"):
        logging.getLogger("outbound.x").info("answered")
    text = output.getvalue().strip()
    assert "INFO" in text and "outbound.x: answered" in text
    assert text.endswith("[trunk=tr call_id=abc]")


def test_context_is_per_asyncio_task(output: io.StringIO) -> None:
    configure_logging("json", stream=output)
    log = logging.getLogger("outbound.tasks")

    async def leg(call_id: str, started: asyncio.Event, other: asyncio.Event) -> None:
        with call_context(call_id=call_id):
            started.set()
            await other.wait()
            log.info("done")

    async def main() -> None:
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.gather(leg("A", a, b), leg("B", b, a))

    asyncio.run(main())
    assert sorted(str(entry["call_id"]) for entry in lines(output)) == ["A", "B"]
    assert current_call_context() == {}


def test_configuring_twice_keeps_one_handler_and_bad_values_are_refused(
    output: io.StringIO,
) -> None:
    configure_logging("json", stream=output)
    configure_logging("json", stream=output)
    logging.getLogger("y").warning("once")
    assert len(output.getvalue().splitlines()) == 1
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")
    with pytest.raises(TypeError, match="unknown call context"), call_context(user="x"):
        pass


def test_call_fields_leave_out_what_is_not_known_yet(output: io.StringIO) -> None:
    configure_logging("text", stream=output)
    logging.getLogger("outbound.test").warning(
        "INVITE not sent", extra=call_fields(correlation_id="k1", trunk="t1", leg_id="L1"))
    assert output.getvalue().rstrip().endswith(
        "outbound.test: INVITE not sent [trunk=t1 correlation_id=k1 leg_id=L1]")


def test_background_writer_keeps_fields_messages_and_exceptions(output: io.StringIO) -> None:
    handler = configure_logging("json", "INFO", stream=output, background=True)
    assert isinstance(handler, BackgroundHandler)
    log = logging.getLogger("outbound.bg")
    values = ["first"]
    with call_context(call_id="c1", correlation_id="k1", trunk="t1"):
        log.info("value %s", values)
        values.append("changed later")  # merged when logged, not when written
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    handler.close()  # writes what is queued
    first, second = lines(output)
    assert first["message"] == "value ['first']" and first["call_id"] == "c1"
    assert second["trunk"] == "t1" and "RuntimeError: boom" in str(second["exception"])


class BlockingTarget(logging.Handler):
    """A log writer that stalls (a full pipe) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.unblock = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.writing.set()
        self.unblock.wait(10)
        self.messages.append(record.getMessage())


def test_a_stalled_writer_drops_lines_and_says_how_many_instead_of_blocking() -> None:
    target = BlockingTarget()
    handler = BackgroundHandler(target, size=2)
    log = logging.getLogger("outbound.stalled")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("line 1")
        assert target.writing.wait(5)  # the writer holds line 1: the queue is empty
        for number in range(2, 6):
            log.warning("line %d", number)  # 2 and 3 fill the queue; 4 and 5 do not block
        assert handler.dropped == 2
        target.unblock.set()
        wait_until(lambda: len(target.messages) == 3, 5, "the writer to catch up")
        log.warning("line 6")
    finally:
        handler.close()
        log.removeHandler(handler)
        log.propagate = True
    assert target.messages == [
        "line 1", "line 2", "line 3",
        "2 log line(s) dropped: the log writer could not keep up", "line 6",
    ]


def test_celery_per_task_lines_are_left_out_and_library_debug_too(output: io.StringIO) -> None:
    configure_logging("json", "debug", stream=output)
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).info("Task outbound.dial[1] received")
        logging.getLogger(name).warning("Task outbound.dial[1] raised")
    logging.getLogger("kombu.connection").debug("polling")
    logging.getLogger("celery.worker").info("ready")
    logging.getLogger("workers.calls").debug("INVITE sent")
    assert [entry["message"] for entry in lines(output)] == [
        "Task outbound.dial[1] raised", "Task outbound.dial[1] raised", "ready", "INVITE sent"]
    with pytest.raises(ValueError, match="log level must be"):
        configure_logging("json", "LOUD", stream=output)


def test_python_warnings_become_log_lines(output: io.StringIO) -> None:
    logging.captureWarnings(False)  # earlier tests left it on, around pytest's own capture
    configure_logging("json", stream=output)
    try:
        warnings.warn("running as root", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
    (entry,) = lines(output)
    assert entry["logger"] == "py.warnings" and "running as root" in str(entry["message"])
