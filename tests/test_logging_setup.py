"""Logging: JSON lines and text carry call_id, correlation_id and trunk on every call line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from workers.logging_setup import (
    call_context,
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
