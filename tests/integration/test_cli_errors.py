"""Every `outbound` command as a user runs it with a bad setting (exit 2, the message names
the flag, the variable, or the file and key) or with a service down (exit 1, the message
names the service and its URL, password hidden); never a traceback.

"Down" is a closed port on 127.0.0.1. The worker runs as a subprocess (it would start Celery
in this process otherwise); the other commands run in-process through click's CliRunner.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import URL

from cli.main import main
from tests.workers_harness import PYTHON, REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cret"
CLOSED = free_port()  # bound once and released: nothing listens there
DOWN_DATABASE = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{CLOSED}/outbound"
DOWN_REDIS = f"redis://:{SECRET}@127.0.0.1:{CLOSED}/0"
SHOWN_DATABASE = f"postgresql+psycopg://postgres:***@127.0.0.1:{CLOSED}/outbound"
SHOWN_REDIS = f"redis://:***@127.0.0.1:{CLOSED}/0"
USAGE, UNAVAILABLE = 2, 1


@pytest.fixture(scope="module")
def trunks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trunks") / "trunks.toml"
    path.write_text('[trunks.t1]\nproxy = "127.0.0.1:5999"\n')
    return path


def without_outbound_variables(**env: str) -> dict[str, str | None]:
    """The environment a test runs in: no OUTBOUND_* from outside, then `env`."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("OUTBOUND_")}
    return {**cleared, **env}


def invoke(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=without_outbound_variables(**env))
    if result.exc_info is not None and result.exc_info[0] is not SystemExit:
        raise AssertionError(f"{args} raised instead of reporting") from result.exception
    return result.exit_code, result.output


def run_subprocess(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOUND_")}
    result = subprocess.run(
        [str(PYTHON), "-m", "cli.main", *args], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60, env={**clean, **env},
    )
    return result.returncode, result.stdout + result.stderr


def assert_reported(code: int, output: str, status: int, *needles: str) -> None:
    assert code == status, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"
    assert "Traceback" not in output and SECRET not in output, output


BAD_SETTINGS = [
    pytest.param(["dial", "--trunk", "t1", "--to", "123"], {"OUTBOUND_REDIS_URL": "nope://"},
                 "OUTBOUND_REDIS_URL='nope://': not a Redis URL", id="dial-redis-url"),
    pytest.param(["dial", "--trunk", "t1", "--to", "not-a-uri"], {},
                 "to: 'not-a-uri' is neither a sip:, sips: or tel: URI nor a phone number",
                 id="dial-to-neither-uri-nor-number"),
    # The database is down: enqueueing does not need it; a bad message is refused before
    # anything is published. (A bare number needs no trunks file: the worker resolves it.)
    pytest.param(["dial", "--trunk", "t1", "--to", "sip:bob@host:99999"],
                 {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 "to: SIP URI: port 99999 out of range", id="dial-bad-uri"),
    # A URI needs no trunk domain, yet the trunk must exist: no worker serves its queue.
    # The database is down: the trunk is refused before anything would be stored.
    pytest.param(["dial", "--trunk", "nosuch", "--to", "sip:bob@127.0.0.1"],
                 {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 "unknown trunk 'nosuch': ", id="dial-unknown-trunk-uri"),
    pytest.param(["events", "--trunk", "t1"], {"OUTBOUND_REDIS_URL": "nope://"},
                 "OUTBOUND_REDIS_URL='nope://'", id="events-redis-url"),
    pytest.param(["cancel", "--call-id", "x"], {"OUTBOUND_DATABASE_URL": "not a url"},
                 "OUTBOUND_DATABASE_URL='not a url': not a usable database URL",
                 id="cancel-database-url"),
    pytest.param(["hangup", "--call-id", "x"], {"OUTBOUND_BROKER_URL": "bogus://x"},
                 "OUTBOUND_BROKER_URL='bogus://x': not a broker URL", id="hangup-broker-url"),
    pytest.param(["report", "--database-url", "bogus://x"], {},
                 "--database-url='bogus://x': not a usable database URL", id="report-flag"),
    pytest.param(["report"], {"OUTBOUND_DATABASE_URL": f"postgresql://u:{SECRET}@h:port/x"},
                 "OUTBOUND_DATABASE_URL='postgresql://u:***@h:port/x'", id="report-variable"),
    pytest.param(["migrate"], {"OUTBOUND_DATABASE_URL": "not a url"},
                 "OUTBOUND_DATABASE_URL='not a url'", id="migrate-variable"),
    pytest.param(["demo", "--redis-url", "nope://"], {},
                 "--redis-url='nope://': not a Redis URL", id="demo-flag"),
    pytest.param(["demo"], {"OUTBOUND_DATABASE_URL": "not a url"},
                 "OUTBOUND_DATABASE_URL='not a url'", id="demo-variable"),
]


@pytest.mark.parametrize(("args", "env", "needle"), BAD_SETTINGS)
def test_a_bad_setting_exits_2_naming_it(
    trunks_file: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    code, output = invoke(args, {"OUTBOUND_TRUNKS_FILE": str(trunks_file), **env})
    assert_reported(code, output, USAGE, needle)
    if "unknown trunk" in needle:
        assert f"{trunks_file} has no [trunks.nosuch] table (trunks defined: t1)" in output


def test_a_bad_trunks_file_exits_2_naming_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "trunks.toml"
    bad.write_text('[trunks.t1]\nproxy = "127.0.0.1:99999"\n')
    for args in (["trunks", "check", "--trunks", str(bad)],
                 ["dial", "--trunks", str(bad), "--trunk", "t1", "--to", "123"]):
        code, output = invoke(args, {})
        assert_reported(code, output, USAGE, f"{bad}: trunks.t1.proxy: address", "99999")


DOWN_SERVICES = [
    # enqueueing needs no database; --wait reads the CDR, so it checks first
    pytest.param(["dial", "--trunk", "t1", "--to", "123", "--wait"],
                 {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 f"cannot reach the database {SHOWN_DATABASE}: connection failed",
                 id="dial-database"),
    pytest.param(["dial", "--trunk", "t1", "--to", "123"], {"OUTBOUND_REDIS_URL": DOWN_REDIS},
                 f"cannot reach Redis {SHOWN_REDIS}: ", id="dial-redis"),
    pytest.param(["dial", "--trunk", "t1", "--to", "123"], {"OUTBOUND_BROKER_URL": DOWN_REDIS},
                 f"cannot reach the broker {SHOWN_REDIS}: ", id="dial-broker"),
    pytest.param(["events"], {"OUTBOUND_REDIS_URL": DOWN_REDIS},
                 f"cannot reach Redis {SHOWN_REDIS}: ", id="events-redis"),
    pytest.param(["events", "--trunk", "t1"], {"OUTBOUND_REDIS_URL": DOWN_REDIS},
                 f"cannot reach Redis {SHOWN_REDIS}: ", id="events-trunk-redis"),
    pytest.param(["cancel", "--correlation-id", "c1"], {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 f"cannot reach the database {SHOWN_DATABASE}: ", id="cancel-database"),
    pytest.param(["hangup", "--call-id", "x"], {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 f"cannot reach the database {SHOWN_DATABASE}: ", id="hangup-database"),
    pytest.param(["report"], {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 f"cannot reach the database {SHOWN_DATABASE}: ", id="report-database"),
    pytest.param(["migrate"], {"OUTBOUND_DATABASE_URL": DOWN_DATABASE},
                 f"cannot reach the database {SHOWN_DATABASE}: ", id="migrate-database"),
]


@pytest.mark.parametrize(("args", "env", "needle"), DOWN_SERVICES)
def test_a_service_down_exits_1_naming_it_and_its_url(
    trunks_file: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    code, output = invoke(args, {"OUTBOUND_TRUNKS_FILE": str(trunks_file), **env})
    assert_reported(code, output, UNAVAILABLE, needle)
    assert len(output.strip().splitlines()) == 1, output  # no retry chatter either


@pytest.fixture
def empty_database(empty_database_url: URL) -> Iterator[str]:
    yield empty_database_url.render_as_string(hide_password=False)


def test_the_worker_reports_a_bad_setting_or_a_service_down_before_starting(
    trunks_file: Path, empty_database: str
) -> None:
    worker = ["worker", "--trunk", "t1", "--trunks", str(trunks_file)]
    cases = [
        ({"OUTBOUND_DATABASE_URL": "not a url"}, USAGE, "OUTBOUND_DATABASE_URL='not a url'"),
        ({"OUTBOUND_REDIS_URL": DOWN_REDIS}, UNAVAILABLE, f"cannot reach Redis {SHOWN_REDIS}"),
        ({"OUTBOUND_BROKER_URL": DOWN_REDIS}, UNAVAILABLE,
         f"cannot reach the broker {SHOWN_REDIS}"),
        ({"OUTBOUND_DATABASE_URL": DOWN_DATABASE}, UNAVAILABLE,
         f"cannot reach the database {SHOWN_DATABASE}"),
        ({"OUTBOUND_DATABASE_URL": empty_database}, UNAVAILABLE,
         "has no outbound schema: run `outbound migrate`"),
    ]
    for env, status, needle in cases:
        code, output = run_subprocess(worker, env)
        assert_reported(code, output, status, needle)


@pytest.mark.parametrize("command", ["worker", "dial", "events", "cancel", "hangup", "report",
                                     "migrate", "demo", "carrier", "trunks check"])
def test_every_command_documents_its_exit_status(command: str) -> None:
    code, output = invoke([*command.split(), "--help"], {})
    assert code == 0
    flat = " ".join(output.split())
    assert "Exit status: 0 " in flat and "; 2 usage or configuration error" in flat, flat


# A service that answers and refuses what its URL asks is a configuration error (exit 2): the
# RabbitMQ on 127.0.0.1:5672 (guest/guest) and the Redis on 6379 of this machine.
REFUSED = [
    pytest.param({"OUTBOUND_BROKER_URL": f"amqp://guest:{SECRET}@127.0.0.1:5672//"},
                 "OUTBOUND_BROKER_URL amqp://guest:***@127.0.0.1:5672//: the broker refused it "
                 "(user, password or vhost): ", id="amqp-password"),
    pytest.param({"OUTBOUND_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/no-such-vhost"},
                 "vhost no-such-vhost not found", id="amqp-vhost"),
    pytest.param({"OUTBOUND_REDIS_URL": "redis://127.0.0.1:6379/99"},
                 "OUTBOUND_REDIS_URL redis://127.0.0.1:6379/99: Redis refused it: DB index is out "
                 "of range", id="redis-db-index"),
]


@pytest.mark.parametrize(("env", "needle"), REFUSED)
def test_a_service_refusing_its_url_exits_2_naming_the_setting(
    trunks_file: Path, env: dict[str, str], needle: str
) -> None:
    code, output = invoke(["dial", "--trunk", "t1", "--to", "sip:bob@127.0.0.1"],
                          {"OUTBOUND_TRUNKS_FILE": str(trunks_file), **env})
    assert_reported(code, output, USAGE, needle)
    assert len(output.strip().splitlines()) == 1, output


def test_the_worker_reports_a_refused_service_or_sip_socket_in_one_line(
    trunks_file: Path,
) -> None:
    worker = ["worker", "--trunk", "t1", "--trunks", str(trunks_file)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cases = [
            (["--sip-port", str(port)], {},
             f"--sip-host 127.0.0.1 --sip-port {port}: cannot bind UDP 127.0.0.1:{port}"),
            (["--sip-host", "192.0.2.1"], {}, "--sip-host 192.0.2.1 --sip-port 0: cannot bind UDP"),
            ([], {"OUTBOUND_BROKER_URL": f"amqp://guest:{SECRET}@127.0.0.1:5672//"},
             "OUTBOUND_BROKER_URL amqp://guest:***@127.0.0.1:5672//: the broker refused it"),
            ([], {"OUTBOUND_REDIS_URL": "redis://127.0.0.1:6379/99"},
             "OUTBOUND_REDIS_URL redis://127.0.0.1:6379/99: Redis refused it"),
        ]
        for args, env, needle in cases:
            code, output = run_subprocess([*worker, *args], env)
            assert_reported(code, output, USAGE, needle)
            assert len(output.strip().splitlines()) == 1, output
