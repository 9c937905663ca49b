"""`outbound demo`: the whole path on one machine, with live progress and the report at the end."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from carrier.config import Outcome
from carrier.shell import format_summary
from cli.commands._errors import reports_errors, setting_of
from cli.demo.backends import BackendError
from workers.config.settings import check_database_url, check_redis_url

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_BACKEND = 2


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=(
    "Exit status: 0 every call ended and the report was printed; 1 some calls had not ended "
    "by --timeout, or the run failed (the message says how); 2 usage or configuration error "
    "(the message names the flag or the environment variable), or a configured PostgreSQL or "
    "Redis cannot be used (the message names which, at which URL); never a traceback."
))
@click.option("--calls", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Calls in the campaign.")
@click.option("--cps", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Trunk rate limit (calls per second).")
@click.option("--answer", type=click.FloatRange(min=0), default=0.6, show_default=True,
              metavar="P", help="Carrier: weight of answered calls.")
@click.option("--busy", type=click.FloatRange(min=0), default=0.15, show_default=True,
              metavar="P", help="Carrier: weight of 486 Busy Here.")
@click.option("--no-answer", type=click.FloatRange(min=0), default=0.1, show_default=True,
              metavar="P", help="Carrier: weight of calls that ring until we CANCEL.")
@click.option("--reject", type=click.FloatRange(min=0), default=0.15, show_default=True,
              metavar="P", help="Carrier: weight of 603 Decline.")
@click.option("--ring", type=click.FloatRange(min=0), default=1.0, show_default=True,
              metavar="S", help="Carrier: seconds of ringing before the final response.")
@click.option("--hold", type=click.FloatRange(min=0), default=2.0, show_default=True,
              metavar="S", help="Carrier: answered calls are hung up after S seconds.")
@click.option("--ring-timeout", type=click.FloatRange(min=0, min_open=True), default=4.0,
              show_default=True, metavar="S", help="Worker: CANCEL unanswered calls after S.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where the SQLite file, trunks file and worker log go.")
@click.option("--database-url", default=None, envvar="OUTBOUND_DATABASE_URL",
              help="PostgreSQL to use (default: $OUTBOUND_DATABASE_URL, else embedded SQLite).")
@click.option("--redis-url", default=None, envvar="OUTBOUND_REDIS_URL",
              help="Redis to use (default: $OUTBOUND_REDIS_URL, else an embedded one).")
@click.option("--seed", type=int, default=None, help="Seed the carrier's outcome draw.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True, metavar="S", help="Give up when calls have not ended by then.")
@click.option("--quiet-events", is_flag=True, help="Show only the progress line, not events.")
@reports_errors
def command(
    calls: int, cps: float, answer: float, busy: float, no_answer: float, reject: float,
    ring: float, hold: float, ring_timeout: float, workdir: Path, database_url: str | None,
    redis_url: str | None, seed: int | None, timeout: float, quiet_events: bool,
) -> None:
    """Run the whole path on one machine: a carrier simulator answers, rejects and rings; a
    pinned worker dials a small campaign from the queue; events stream out live; CDRs land;
    the report table (ASR, ACD, dispositions) prints at the end.

    Needs nothing else running (SQLite file, embedded broker); uses PostgreSQL and Redis when
    OUTBOUND_DATABASE_URL and OUTBOUND_REDIS_URL point at them.
    """
    from cli.demo.runner import DemoOptions, run_demo

    weights = {Outcome.ANSWER: answer, Outcome.BUSY: busy, Outcome.NO_ANSWER: no_answer,
               Outcome.REJECT: reject}
    if sum(weights.values()) <= 0:
        raise click.UsageError("--answer, --busy, --no-answer and --reject are all 0")
    if database_url:
        check_database_url(database_url, setting_of("database_url", "OUTBOUND_DATABASE_URL"))
    if redis_url:
        check_redis_url(redis_url, setting_of("redis_url", "OUTBOUND_REDIS_URL"))
    options = DemoOptions(
        calls=calls, weights=weights, ring=ring, hold=hold, cps=cps, ring_timeout=ring_timeout,
        workdir=workdir, database_url=database_url, redis_url=redis_url, seed=seed,
        timeout=timeout, show_events=not quiet_events,
    )
    try:
        result = run_demo(options, sys.stdout)
    except BackendError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_BACKEND)
    if result.report:
        click.echo("\nreport (from the CDRs)\n" + result.report)
    if result.carrier is not None:
        click.echo(format_summary(result.carrier, 0, title="what the carrier simulator saw"))
    if result.error:
        click.echo(f"Error: {result.error}", err=True)
    sys.exit(EXIT_OK if result.complete and result.error is None else EXIT_INCOMPLETE)
