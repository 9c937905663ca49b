"""`outbound report`: ASR, ACD, NER, PDD and outcome counts from the CDRs, as table/CSV/JSON."""

from __future__ import annotations

from datetime import datetime

import click

from cli.commands._errors import checked_database_url, exit_status_help, reports_errors


def _when(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    from models.times import parse_when

    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param=param) from None


@click.command("report", epilog=exit_status_help("the report was printed"))
@click.option(
    "--since",
    callback=_when,
    metavar="T",
    help="Start of the range (inclusive): ISO 8601 (naive = UTC), 'now', or an age like 24h.",
)
@click.option("--until", callback=_when, metavar="T", help="End of the range (exclusive).")
@click.option(
    "--by",
    type=click.Choice(["trunk", "scenario", "hour", "day"]),
    default=None,
    help="Group the figures (hour and day are UTC).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--database-url",
    envvar="OUTBOUND_DATABASE_URL",
    default=None,
    help="Database to read (default: $OUTBOUND_DATABASE_URL or the local PostgreSQL).",
)
@reports_errors
def command(
    since: datetime | None,
    until: datetime | None,
    by: str | None,
    fmt: str,
    database_url: str | None,
) -> None:
    """Print attempts, answered, ASR, ACD, NER (ITU-T E.425), mean PDD, and counts per
    disposition and hangup_reason for CDRs started in [--since, --until)."""
    from models.db import make_engine
    from models.report_output import render
    from models.reporting import build_report

    if since is not None and until is not None and until <= since:
        raise click.BadParameter("--until must be later than --since", param_hint="--until")
    engine = make_engine(checked_database_url(database_url))
    try:
        rows = build_report(engine, since=since, until=until, by=by)
    finally:
        engine.dispose()
    click.echo(render(rows, fmt, by=by, since=since, until=until), nl=False)
