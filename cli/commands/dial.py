"""`outbound dial`: queue one dial for a trunk; with --wait follow its events and print its CDR."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cli.commands._errors import (
    exit_status_help,
    quiet_repository,
    reports_errors,
    watch_services,
)

if TYPE_CHECKING:
    from workers.client import DialClient, QueuedDial

CDR_COLUMNS = (
    "call_id", "correlation_id", "scenario", "trunk", "from_uri", "to_uri", "started_at",
    "first_provisional_at", "answered_at", "ended_at", "duration_ms", "billsec",
    "final_status_code", "disposition", "hangup_reason", "hangup_by", "reason_protocol",
    "reason_cause", "reason_text", "codec", "srtp", "error", "worker",
)


@click.command("dial", epilog=exit_status_help(
    "queued (with --wait: the call was answered)",
    not_done="with --wait: the call was not answered, or no terminal event came in time",
))
@click.option("--trunk", required=True, help="Trunk to dial through (queue dial.<trunk>.json).")
@click.option("--to", "to", required=True,
              help="sip:/sips:/tel: URI, or a number (the worker puts it at the trunk's domain).")
@click.option("--correlation-id", default=None, help="Your id for this call (default: a UUID).")
@click.option("--scenario", default="campaign", show_default=True,
              type=click.Choice(["campaign", "transfer_agent", "callback", "manual"]))
@click.option("--wait", is_flag=True, help="Follow the events to the end and print the CDR.")
@click.option("--timeout", default=3700.0, show_default=True,
              help="Seconds --wait waits for the terminal event.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--trunks", "trunks_file", default=None, metavar="FILE",
              help="Trunks TOML file (default: $OUTBOUND_TRUNKS_FILE).")
@reports_errors
def command(
    trunk: str, to: str, correlation_id: str | None, scenario: str, wait: bool, timeout: float,
    as_json: bool, trunks_file: str | None,
) -> None:
    """Queue a dial: publish a dial message (every field checked first) on
    `dial.<trunk>.json`; the worker stores the leg and dials it (docs/dial-message.md).

    Redis and the broker (with --wait also PostgreSQL) must answer before anything is
    published."""
    from cli.commands._preflight import check_broker, check_database_schema, check_redis
    from workers.client import DialClient
    from workers.config.settings import Settings
    from workers.contract.queues import dial_message_queue_name

    settings = Settings.from_env(trunks_file=trunks_file)
    watch_services(settings)
    client = DialClient(settings, repository=quiet_repository(settings.database_url))
    try:
        if settings.trunks_file:  # a configured trunks file must know the trunk (exit 2)
            client.trunk_config(trunk)  # before any service is asked
        check_redis(settings.redis_url)
        check_broker(client.app)
        if wait:  # the CDR is read from PostgreSQL at the end: reach it before publishing
            check_database_schema(settings.database_url)
        queued = client.enqueue_dial(trunk, to, correlation_id=correlation_id, scenario=scenario)
        summary = {
            "leg_id": queued.leg_id, "correlation_id": queued.correlation_id, "trunk": trunk,
            "queue": dial_message_queue_name(trunk),
        }
        _print("queued", summary, as_json)
        if wait:
            answered = _follow(client, queued, timeout, as_json)
            raise SystemExit(0 if answered else 1)
    finally:
        client.close()


def _follow(client: DialClient, queued: QueuedDial, timeout: float, as_json: bool) -> bool:
    """Print the leg's events and then its CDR; True when the call was answered."""
    answered = False
    try:
        for event in client.follow(queued, timeout=timeout):
            _print("event", event.fields(), as_json)
            answered = answered or event.state == "established"
    except TimeoutError as error:
        raise click.ClickException(str(error)) from None
    cdr = client.cdr_for_leg(queued.leg_id)
    if cdr is None:
        raise click.ClickException(f"no CDR stored for leg {queued.leg_id}")
    _print("cdr", {name: _plain(getattr(cdr, name)) for name in CDR_COLUMNS}, as_json)
    return answered


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value


def _print(kind: str, fields: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"type": kind, **fields}, default=str))
        return
    if kind == "event":
        code = f" {fields['status_code']}" if fields.get("status_code") else ""
        click.echo(f"{fields['at']}  {fields['event_id']:<44} {fields['state']}{code} "
                   f"{fields.get('reason', '')}".rstrip())
        return
    click.echo(f"{kind}:")
    for name, value in fields.items():
        if value not in (None, ""):
            click.echo(f"  {name}: {value}")
