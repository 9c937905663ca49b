"""`outbound trunks check`: send SIP OPTIONS to each trunk and print reachability and RTT."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

import click

from cli.commands._errors import exit_status_help, reports_errors
from workers.config.settings import Settings, resolve_trunks
from workers.signaling.options_ping import OptionsPinger, PingResult

EXIT_ALL_REACHABLE = 0
EXIT_SOME_UNREACHABLE = 1


def format_table(results: list[PingResult]) -> str:
    rows = [("TRUNK", "PROXY", "TRANSPORT", "RESULT", "RTT")]
    for r in results:
        if r.reachable:
            outcome = f"reachable: {r.status} {r.reason}"
            if r.sent > 1:
                outcome += f" (after {r.sent - 1} retransmissions)"
            rtt = f"{r.rtt_ms:.1f} ms"
        else:
            outcome, rtt = f"UNREACHABLE: {r.error}", "-"
        rows.append((r.trunk, r.proxy, r.transport, outcome, rtt))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    )


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
    """
    trunks_config = resolve_trunks(Settings.from_env(), trunks_file)
    trunks = [trunks_config.get(n) for n in names] if names else \
        list(trunks_config.trunks.values())
    try:
        results = asyncio.run(OptionsPinger(bind_host=bind_host, timeout=timeout).ping(trunks))
    except OSError as error:
        raise click.BadParameter(f"cannot send from {bind_host}: {error}",
                                 param_hint="--bind") from None
    if as_json:
        for result in results:
            click.echo(json.dumps({**asdict(result), "reachable": result.reachable}))
    else:
        click.echo(format_table(results))
    ctx = click.get_current_context()
    ctx.exit(EXIT_ALL_REACHABLE if all(r.reachable for r in results) else EXIT_SOME_UNREACHABLE)
