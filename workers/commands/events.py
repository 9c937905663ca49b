"""`outbound events`: print or follow the DialEvent streams, alone or in a consumer group."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import click

from workers.config import ConfigError


@click.command("events")
@click.option("--trunk", "trunks", multiple=True,
              help="Trunk stream to read (repeatable; default: every trunk stream in Redis).")
@click.option("--follow", is_flag=True, help="Keep waiting for new events.")
@click.option("--group", default=None,
              help="Read as this consumer group (each event to one consumer, acknowledged).")
@click.option("--consumer", default="cli", show_default=True, help="Consumer name in --group.")
@click.option("--from-now", is_flag=True, help="Skip the events already in the stream.")
@click.option("--count", default=0, type=click.IntRange(0), help="Stop after N events (0: no).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def command(
    trunks: tuple[str, ...], follow: bool, group: str | None, consumer: str, from_now: bool,
    count: int, as_json: bool,
) -> None:
    """Print DialEvents from `outbound:events:<trunk>` streams (at least once: the same
    event_id may appear twice after a Redis failure; drop repeats by event_id)."""
    import redis

    from workers.config import Settings
    from workers.events_stream import REDIS_UNAVAILABLE, EventReader

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    client: redis.Redis[Any] = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    names = list(trunks) or _known_trunks(client, settings.events_stream(""))
    if not names:
        raise click.ClickException("no event streams in Redis yet; name one with --trunk")
    reader = EventReader(client, settings, names, group=group, consumer=consumer,
                         from_start=not from_now)
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    printed = 0
    try:
        while not stopping:
            try:
                batch = reader.read(block_ms=1000 if follow else None,
                                    count=min(500, count - printed) if count else 500)
            except REDIS_UNAVAILABLE as error:
                if not follow:
                    raise click.ClickException(f"Redis unavailable: {error}") from None
                reader = EventReader(client, settings, names, group=group, consumer=consumer)
                time.sleep(0.5)
                continue
            for item in batch:
                fields = item.event.fields()
                if as_json:
                    click.echo(json.dumps({"stream": item.stream, "id": item.entry_id, **fields}))
                else:
                    code = f" {fields['status_code']}" if fields["status_code"] else ""
                    click.echo(f"{fields['at']}  {fields['trunk']:<12} {fields['event_id']:<44} "
                               f"{fields['state']}{code} {fields['reason']}".rstrip())
                printed += 1
                if count and printed >= count:
                    reader.ack(batch[: batch.index(item) + 1])
                    return
            reader.ack(batch)
            if not batch and not follow:
                return
    finally:
        client.close()


def _known_trunks(client: Any, prefix: str) -> list[str]:
    return sorted(
        (key.decode() if isinstance(key, bytes) else key)[len(prefix):]
        for key in client.scan_iter(f"{prefix}*", _type="stream")
    )
