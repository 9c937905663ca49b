"""`outbound cancel`: CANCEL an unanswered leg, found by correlation_id or Call-ID, through the
worker that owns it (also the shared builder of `outbound hangup`)."""

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
    from workers.client import DialClient
    from workers.coordination.control import ControlResult

EXIT_DONE = 0
EXIT_NOT_DONE = 1  # unknown, finished, not in a state for the action, or no answer in time

DESCRIPTIONS = {
    "cancel": (
        "CANCEL a leg that has not been answered yet. A leg still queued is ended before any "
        "worker dials it, and with --trunk a dial message no worker has taken yet is cancelled "
        "ahead (result `queued`); an answered one is refused (use `outbound hangup`)."
    ),
    "hangup": (
        "End a live leg: BYE when it is answered, CANCEL before. A leg still queued is ended "
        "before any worker dials it; with --trunk, so is a dial message not taken yet."
    ),
}


def control_command(action: str) -> click.Command:
    """The click command for one control action ("cancel" or "hangup")."""

    @click.command(action, help=DESCRIPTIONS[action], epilog=exit_status_help(
        "done",
        not_done="the leg is unknown, finished, not in a state for this action, or its worker "
                 "did not answer in time (the message says which)",
    ))
    @click.option("--correlation-id", default=None, metavar="ID", help="The scheduler's id.")
    @click.option("--call-id", default=None, metavar="ID", help="The leg's SIP Call-ID.")
    @click.option("--trunk", default=None,
                  help="Act only when the leg is on this trunk; with --correlation-id, also "
                       "cancel a dial message no worker has taken yet.")
    @click.option("--timeout", default=10.0, show_default=True,
                  type=click.FloatRange(min=0, min_open=True),
                  help="Seconds to wait for the owner worker's answer.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
    @reports_errors
    def command(correlation_id: str | None, call_id: str | None, trunk: str | None,
                timeout: float, as_json: bool) -> None:
        key = _leg_key(correlation_id, call_id)
        result = _run(action, key, trunk, timeout)
        _report(action, result, as_json)
        raise SystemExit(EXIT_DONE if result.ok else EXIT_NOT_DONE)

    return command


def _leg_key(correlation_id: str | None, call_id: str | None) -> dict[str, str]:
    if (correlation_id is None) == (call_id is None):
        raise click.UsageError("give exactly one of --correlation-id or --call-id")
    name, value = ("correlation_id", correlation_id) if correlation_id is not None else (
        "call_id", call_id)
    assert value is not None
    if not value.strip():
        raise click.UsageError(f"--{name.replace('_', '-')} must not be empty")
    return {name: value}


def _run(action: str, key: dict[str, str], trunk: str | None, timeout: float) -> ControlResult:
    from workers.client import DialClient
    from workers.config.settings import Settings

    settings = Settings.from_env()
    watch_services(settings)
    client = DialClient(settings, repository=quiet_repository(settings.database_url))
    try:
        return _control(client, action, key, trunk, timeout)
    finally:
        client.close()


def _control(
    client: DialClient, action: str, key: dict[str, str], trunk: str | None, timeout: float
) -> ControlResult:
    from workers.coordination.control import ControlResult, find_leg, request_control

    if trunk is not None:
        leg = client.repository.run(find_leg, **key)
        if leg is not None and leg.trunk != trunk:
            where = f"the leg with {_describe(key)} is on trunk {leg.trunk!r}, not {trunk!r}"
            return ControlResult("unknown", where, str(leg.id), leg.call_id, leg.owner_worker)
    return request_control(client, action, trunk=trunk, timeout=timeout, **key)


def _describe(key: dict[str, str]) -> str:
    (name, value), = key.items()
    return f"{name} {value!r}"


def _report(action: str, result: ControlResult, as_json: bool) -> None:
    if as_json:
        fields: dict[str, Any] = {"action": action, "ok": result.ok, **result.to_json()}
        click.echo(json.dumps(fields))
        return
    where = ", ".join(
        f"{label} {value}"
        for label, value in (("leg", result.leg_id), ("call-id", result.call_id),
                             ("worker", result.worker))
        if value
    )
    line = f"{result.result}: {result.detail}" + (f" ({where})" if where else "")
    click.echo(line, err=not result.ok)


command = control_command("cancel")
