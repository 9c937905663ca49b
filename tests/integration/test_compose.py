"""compose/: every service's command is a real `outbound` subcommand whose flags parse, and the
deployment has the promised shape (Docker itself does not run on this machine)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from cli.main import main
from sipstack.target import parse_hostport
from workers.config.settings import load_trunks

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
REPO = COMPOSE_DIR.parent


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load()["services"]
    return found


def outbound_services() -> dict[str, list[str]]:
    commands = {}
    for name, service in services().items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "outbound":
            commands[name] = [str(part) for part in command]
    return commands


def resolve(argv: list[str]) -> tuple[click.Command, list[str], str]:
    """Walk `outbound a b ...` down the click groups to the command that takes the flags."""
    command: click.Command = main
    ctx = click.Context(main, info_name="outbound")
    path = "outbound"
    rest = argv[1:]
    while isinstance(command, click.Group):
        assert rest, f"{path}: a subcommand is needed"
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"{path} has no subcommand {rest[0]!r}"
        path += f" {rest[0]}"
        command, rest = sub, rest[1:]
        ctx = click.Context(command, info_name=path, parent=ctx)
    return command, rest, path


def option_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_every_outbound_command_is_a_real_subcommand_with_valid_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OUTBOUND_CARRIER_PASSWORD", raising=False)
    commands = outbound_services()
    assert {"migrate", "carrier", "worker-a-1", "worker-a-2", "worker-b-1"} <= set(commands)
    problems = []
    for name, argv in commands.items():
        command, args, path = resolve(argv)
        try:
            with command.make_context(path, list(args), resilient_parsing=False):
                pass
        except click.ClickException as error:
            problems.append(f"{name}: `{' '.join(argv)}`: {error.format_message()}")
    assert not problems, "commands that do not parse:\n" + "\n".join(problems)


def test_a_wrong_flag_would_be_caught() -> None:
    command, args, path = resolve(["outbound", "carrier", "--listen", "0.0.0.0:5080", "--bsy", "1"])
    with pytest.raises(click.NoSuchOption):
        command.make_context(path, args, resilient_parsing=False)
    with pytest.raises(AssertionError, match="no subcommand 'wroker'"):
        resolve(["outbound", "wroker"])


def test_two_workers_for_one_trunk_one_for_another_each_with_its_own_identity() -> None:
    trunks = load_trunks(COMPOSE_DIR / "trunks.toml")
    workers = {n: argv for n, argv in outbound_services().items() if argv[1] == "worker"}
    per_trunk = Counter(option_value(argv, "--trunk") for argv in workers.values())
    assert sorted(per_trunk.values()) == [1, 2]
    for trunk in per_trunk:
        assert trunk in trunks.trunks, f"worker trunk {trunk} is not in compose/trunks.toml"
    for flag in ("--name", "--sip-host"):
        values = [option_value(argv, flag) for argv in workers.values()]
        assert len(set(values)) == len(values), f"workers share a {flag}"
    for name, argv in workers.items():
        assert option_value(argv, "--sip-host") == services()[name]["hostname"]
        assert option_value(argv, "--metrics-port") is not None, f"{name} exports no metrics"


def test_trunks_point_at_the_carrier_simulator_where_it_listens() -> None:
    carrier_argv = outbound_services()["carrier"]
    _, listen_port = parse_hostport(option_value(carrier_argv, "--listen") or "", 5080)
    for trunk in load_trunks(COMPOSE_DIR / "trunks.toml").trunks.values():
        assert parse_hostport(trunk.proxy, 5060) == ("carrier", listen_port), trunk.name


def test_images_build_from_the_projects_dockerfile_and_its_copies_exist() -> None:
    for name in outbound_services():
        build = services()[name]["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == \
            COMPOSE_DIR / "Dockerfile", name
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"


def test_services_start_in_order_and_keep_the_broker_safe() -> None:
    found = services()
    assert found["migrate"]["restart"] == "no"
    for name, argv in outbound_services().items():
        if argv[1] == "worker":
            depends = found[name]["depends_on"]
            assert depends["migrate"]["condition"] == "service_completed_successfully"
            assert found[name]["environment"]["OUTBOUND_TRUNKS_FILE"].endswith("trunks.toml")
    assert "noeviction" in found["redis"]["command"]
    flower = found["flower"]["command"]
    broker = next(part.split("=", 1)[1] for part in flower if part.startswith("--broker="))
    assert broker == found["worker-a-1"]["environment"]["OUTBOUND_REDIS_URL"]


def test_prometheus_scrapes_every_metrics_port() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for s in job["static_configs"]
               for t in s["targets"]}
    for name, argv in outbound_services().items():
        port = option_value(argv, "--metrics-port")
        if port is not None:
            host = services()[name].get("hostname", name)
            assert f"{host}:{port}" in targets, f"{name} metrics are not scraped"
