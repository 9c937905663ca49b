"""`outbound hangup`: end a live leg (BYE if answered, else CANCEL), found by correlation_id or
Call-ID, through the worker that owns it."""

from __future__ import annotations

from cli.commands.cancel import control_command

command = control_command("hangup")
