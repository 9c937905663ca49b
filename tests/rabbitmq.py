"""A RabbitMQ virtual host of a test's own on the shared RabbitMQ (127.0.0.1:5672, guest), so
tests never see each other's queues; deleted with everything in it at the end."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import uuid
from typing import Any

import pytest

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672


def rabbitmq_available() -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((RABBITMQ_HOST, RABBITMQ_PORT)) == 0


requires_rabbitmq = pytest.mark.skipif(
    not rabbitmq_available(), reason="needs RabbitMQ on 127.0.0.1:5672 and rabbitmqctl"
)


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
    return done.stdout


class RabbitVhost:
    """`rabbitmqctl add_vhost` + `set_permissions` for guest; `close()` deletes it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"outbound-test-{uuid.uuid4().hex[:10]}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{self.name}"

    def start(self) -> RabbitVhost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def queues(self) -> dict[str, dict[str, Any]]:
        """name -> {"type", "messages", "durable", "auto_delete", "arguments"} (text)."""
        out = rabbitmqctl("list_queues", "-p", self.name, "--no-table-headers", "--silent",
                          "name", "type", "messages", "durable", "auto_delete", "arguments")
        queues: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) < 6:
                continue
            name, kind, messages, durable, auto_delete, arguments = parts[:6]
            queues[name] = {"type": kind, "messages": int(messages or 0),
                            "durable": durable == "true", "auto_delete": auto_delete == "true",
                            "arguments": arguments}
        return queues

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            rabbitmqctl("delete_vhost", self.name)
