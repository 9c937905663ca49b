"""`outbound events`: print or follow the DialEvent streams, alone or in a consumer group."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from cli.commands._errors import exit_status_help, reports_errors, watch_services


@click.command("events", epilog=exit_status_help(
    "the events were printed (none when the stream is empty)",
    not_done="no event stream exists yet and no --trunk was given",
))
@click.option("--trunk", "trunks", multiple=True,
              help="Trunk stream to read (repeatable; default: every trunk stream in Redis).")
@click.option("--follow", is_flag=True,
              help="Keep waiting for new events (through Redis restarts) until Ctrl-C.")
@click.option("--group", default=None,
              help="Read as this consumer group (each event to one consumer, acknowledged).")
@click.option("--consumer", default="cli", show_default=True, help="Consumer name in --group.")
@click.option("--from-now", is_flag=True, help="Skip the events already in the stream.")
@click.option("--count", default=0, type=click.IntRange(0), help="Stop after N events (0: no).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@reports_errors
def command(
    trunks: tuple[str, ...], follow: bool, group: str | None, consumer: str, from_now: bool,
    count: int, as_json: bool,
) -> None:
    """Print DialEvents from `outbound:events:<trunk>` streams (at least once: the same
    event_id may appear twice after a Redis failure; drop repeats by event_id)."""
    import redis

    from workers.config.settings import Settings, hide_password
    from workers.events.stream import REDIS_UNAVAILABLE, EventReader

    settings = Settings.from_env()
    watch_services(settings)
    client: redis.Redis[Any] = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        names = list(trunks) or _known_trunks(client, settings.events_stream(""))
        if not names:
            raise click.ClickException("no event streams in Redis yet; name one with --trunk")
        reader = EventReader(client, settings, names, group=group, consumer=consumer,
                             from_start=not from_now)
        printed = 0
        warned = False
        with _stop_on_signals() as stopping:
            while not stopping():
                try:
                    batch = reader.read(block_ms=1000 if follow else None,
                                        count=min(500, count - printed) if count else 500)
                except REDIS_UNAVAILABLE as error:
                    if not follow:
                        raise
                    if not warned:
                        click.echo(f"cannot reach Redis {hide_password(settings.redis_url)}: "
                                   f"{error}; still trying", err=True)
                        warned = True
                    reader = EventReader(client, settings, names, group=group,
                                         consumer=consumer)
                    time.sleep(0.5)  # pace the reconnection attempts
                    continue
                warned = False
                for item in batch:
                    _print(item.stream, item.entry_id, item.event.fields(), as_json)
                    printed += 1
                    if count and printed >= count:
                        reader.ack(batch[: batch.index(item) + 1])
                        return
                reader.ack(batch)
                if not batch and not follow:
                    return
    finally:
        client.close()


def _print(stream: str, entry_id: str, fields: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"stream": stream, "id": entry_id, **fields}))
        return
    code = f" {fields['status_code']}" if fields["status_code"] else ""
    click.echo(f"{fields['at']}  {fields['trunk']:<12} {fields['event_id']:<44} "
               f"{fields['state']}{code} {fields['reason']}".rstrip())


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Yield a `stopping()` check that SIGTERM and SIGINT make true; the previous handlers
    come back afterwards."""
    stopped = False

    def stop(*_: Any) -> None:
        nonlocal stopped
        stopped = True

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: stopped
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _known_trunks(client: Any, prefix: str) -> list[str]:
    return sorted(
        (key.decode() if isinstance(key, bytes) else key)[len(prefix):]
        for key in client.scan_iter(f"{prefix}*", _type="stream")
    )
