"""`outbound trunks check`: send SIP OPTIONS to each trunk and print reachability and RTT."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict

import click
import redis

from cli.commands._errors import exit_status_help, reports_errors
from sipstack.health import TrunkHealth
from workers.config.settings import Settings, TrunkConfig, resolve_trunks
from workers.coordination.health import TrunkHealthBoard
from workers.events.entries import format_at
from workers.signaling.options_ping import OptionsPinger, PingResult
from workers.signaling.registrations import read_statuses, registration_summary

EXIT_ALL_REACHABLE = 0
EXIT_SOME_UNREACHABLE = 1


def registrations(trunks: list[TrunkConfig], settings: Settings) -> dict[str, str]:
    """What the workers of each registering trunk last published about its REGISTER binding
    (workers/signaling/registrations.py), read from Redis; empty when no trunk registers."""
    names = [trunk.name for trunk in trunks if trunk.registers]
    if not names:
        return {}
    client: redis.Redis[bytes] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        now = time.time()
        return {name: registration_summary(read_statuses(client, settings, name), now)
                for name in names}
    except redis.RedisError as error:
        return dict.fromkeys(names, f"unknown: Redis unreachable ({error.__class__.__name__})")
    finally:
        client.close()


def format_table(results: list[PingResult], registered: dict[str, str] | None = None) -> str:
    """One row per trunk; a REGISTRATION column when some trunk registers."""
    registered = registered or {}
    rows: list[tuple[str, ...]] = [("TRUNK", "PROXY", "TRANSPORT", "RESULT", "RTT")]
    for r in results:
        if r.reachable:
            outcome = f"reachable: {r.status} {r.reason}"
            if r.sent > 1:
                outcome += f" (after {r.sent - 1} retransmissions)"
            rtt = f"{r.rtt_ms:.1f} ms"
        else:
            outcome, rtt = f"UNREACHABLE: {r.error}", "-"
        rows.append((r.trunk, r.proxy, r.transport, outcome, rtt))
    if registered:
        rows = [(*row, "REGISTRATION" if index == 0 else registered.get(row[0], "-"))
                for index, row in enumerate(rows)]
    last = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(last)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:last])) + "  " + row[last]
        for row in rows
    )


def describe_health(health: TrunkHealth) -> str:
    if health.checked_at is None:
        return "up (no ping results recorded)"
    if health.up:
        return f"up (last ping {format_at(health.checked_at)})"
    since = format_at(health.since) if health.since is not None else "?"
    return f"DOWN since {since} ({health.misses} misses in a row)"


def board_verdicts(settings: Settings, trunks: list[TrunkConfig]) -> dict[str, str]:
    """What the workers' OPTIONS health checks say (the shared board in Redis), for the
    trunks that have `health_check = true`."""
    checked = [trunk for trunk in trunks if trunk.health_check]
    if not checked:
        return {}
    client: redis.Redis[bytes] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        board = TrunkHealthBoard(client, settings)
        return {trunk.name: describe_health(board.state(trunk.name)) for trunk in checked}
    except redis.RedisError as error:
        return {trunk.name: f"unknown (Redis unavailable: {error.__class__.__name__})"
                for trunk in checked}
    finally:
        client.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Inspect the trunks defined in the trunks TOML file."""


@command.command("check", epilog=exit_status_help(
    "every trunk answered", not_done="some trunk did not answer", services=False,
))
@click.option("--trunk", "names", multiple=True, metavar="T",
              help="Check only this trunk (repeatable; default: every trunk in the file).")
@click.option("--trunks", "trunks_file", default=None, metavar="FILE",
              help="Trunks TOML file (default: $OUTBOUND_TRUNKS_FILE).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="S", help="Give up on a trunk after S seconds.")
@click.option("--bind", "bind_host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="Local address to send from.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trunk.")
@reports_errors
def check(
    names: tuple[str, ...], trunks_file: str | None, timeout: float, bind_host: str,
    as_json: bool,
) -> None:
    """Send SIP OPTIONS to each trunk's proxy; print reachability and round-trip time.

    Any final response counts as reachable (a 401/403/404/405 still proves the proxy answers).
    For trunks with `health_check = true`, also what the workers' health checks say (Redis).
    """
    settings = Settings.from_env()
    trunks_config = resolve_trunks(settings, trunks_file)
    trunks = [trunks_config.get(n) for n in names] if names else \
        list(trunks_config.trunks.values())
    try:
        results = asyncio.run(OptionsPinger(bind_host=bind_host, timeout=timeout).ping(trunks))
    except OSError as error:
        raise click.BadParameter(f"cannot send from {bind_host}: {error}",
                                 param_hint="--bind") from None
    verdicts = board_verdicts(settings, trunks)
    registered = registrations(trunks, settings)
    if as_json:
        for result in results:
            extra = {"registration": registered[result.trunk]} if result.trunk in registered \
                else {}
            click.echo(json.dumps({**asdict(result), "reachable": result.reachable,
                                   "health": verdicts.get(result.trunk), **extra}))
    else:
        click.echo(format_table(results, registered))
        if verdicts:
            width = max(len(name) for name in verdicts)
            click.echo("\nWORKERS' HEALTH CHECKS (shared in Redis)")
            for name, verdict in verdicts.items():
                click.echo(f"{name.ljust(width)}  {verdict}")
    ctx = click.get_current_context()
    ctx.exit(EXIT_ALL_REACHABLE if all(r.reachable for r in results) else EXIT_SOME_UNREACHABLE)
