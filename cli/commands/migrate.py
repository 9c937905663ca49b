"""`outbound migrate`: upgrade the database to the newest schema, or print the SQL for it."""

from __future__ import annotations

import click

from cli.commands._errors import (
    ConfigFailure,
    checked_database_url,
    exit_status_help,
    reports_errors,
)


@click.command("migrate", epilog=exit_status_help("the schema is at the revision asked for"))
@click.option(
    "--database-url",
    envvar="OUTBOUND_DATABASE_URL",
    default=None,
    help="Database to migrate (default: $OUTBOUND_DATABASE_URL or the local PostgreSQL).",
)
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it.")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option(
    "--downgrade",
    "downgrade_to",
    default=None,
    metavar="REVISION",
    help="Downgrade to REVISION ('base' drops everything) instead of upgrading.",
)
@reports_errors
def command(database_url: str | None, sql: bool, revision: str, downgrade_to: str | None) -> None:
    """Upgrade the database schema to REVISION (head), or downgrade with --downgrade."""
    from alembic.util import CommandError

    from migrations import runner

    url = checked_database_url(database_url)
    target = url.render_as_string(hide_password=True)
    try:
        if downgrade_to is not None:
            runner.downgrade(url, downgrade_to, sql=sql)
        else:
            runner.upgrade(url, revision, sql=sql)
    except CommandError as error:  # the revision asked for is unknown or out of reach
        option = "--downgrade" if downgrade_to is not None else "--revision"
        raise ConfigFailure(f"{option}: {error}") from None
    if not sql:
        now = runner.current_revision(url)
        click.echo(f"{target}: schema at revision {now or 'base'}", err=True)
