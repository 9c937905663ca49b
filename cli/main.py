"""The `outbound` command: one click group, each subcommand loaded from cli.commands."""

from __future__ import annotations

import importlib

import click

# name -> module under cli.commands exposing a click command called `command`
SUBCOMMANDS: dict[str, str] = {
    "call": "call",
    "cancel": "cancel",
    "carrier": "carrier",
    "demo": "demo",
    "dial": "dial",
    "events": "events",
    "hangup": "hangup",
    "migrate": "migrate",
    "report": "report",
    "trunks": "trunks",
    "worker": "worker",
}


class LazyGroup(click.Group):
    """Import a subcommand's module only when it runs, so `outbound call` never loads Celery."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"cli.commands.{module_name}")
        command: click.Command = module.command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """outbound: place outbound SIP calls at scale."""


if __name__ == "__main__":
    main()
