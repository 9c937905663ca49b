"""`outbound worker --trunk T`: one pinned Celery worker running the trunk's signaling."""

from __future__ import annotations

import socket
import sys

import click

from workers.commands._errors import exit_status_help, reports_errors, watch_services
from workers.config import Settings, resolve_trunks


@click.command("worker", epilog=exit_status_help(
    "stopped cleanly (SIGTERM: ringing calls cancelled, answered ones drained)",
    not_done="the worker stopped on an error",
))
@click.option("--trunk", "trunk_name", required=True, help="The trunk this worker dials for.")
@click.option("--trunks", "trunks_file", default=None, metavar="FILE",
              help="Trunks TOML file (default: $OUTBOUND_TRUNKS_FILE).")
@click.option("--name", "node", default=None,
              help="Celery node name, unique per running worker "
                   "(default: outbound.<trunk>@<hostname>).")
@click.option("--sip-host", default="127.0.0.1", show_default=True,
              help="Address the SIP socket binds to and advertises.")
@click.option("--sip-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="UDP port of the SIP socket (0: any free port).")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Threads taking dial messages (each returns in milliseconds).")
@click.option("--prefetch", default=16, show_default=True, type=click.IntRange(1, 1000),
              help="Messages reserved per thread.")
@click.option("--drain-timeout", type=float, default=None,
              help="Seconds answered calls may go on after SIGTERM before they get a BYE "
                   "(default: $OUTBOUND_DRAIN_TIMEOUT or 30).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@reports_errors
def command(
    trunk_name: str, trunks_file: str | None, node: str | None, sip_host: str, sip_port: int,
    concurrency: int, prefetch: int, drain_timeout: float | None, loglevel: str,
    log_format: str,
) -> None:
    """Run one pinned worker for TRUNK: it consumes `dial.<trunk>` and its own direct queue,
    and runs the SIP UAC with its socket on one asyncio thread (threads pool: nothing forks
    after the socket exists). Redis, the broker and PostgreSQL (with its schema) must answer
    before it starts."""
    settings = Settings.from_env(trunks_file=trunks_file, drain_timeout=drain_timeout)
    trunk = resolve_trunks(settings).get(trunk_name)
    watch_services(settings)

    from workers import bootstep
    from workers.app import app, configure, dial_queue_name
    from workers.commands._preflight import check_broker, check_database_schema, check_redis
    from workers.logging_setup import configure_logging
    from workers.service import WorkerOptions

    configure(app, settings, worker_prefetch_multiplier=prefetch)
    check_redis(settings.redis_url)
    check_broker(app)
    check_database_schema(settings.database_url)
    configure_logging(log_format, loglevel)
    import workers.tasks  # noqa: F401  (registers the tasks on the app)

    node_name = node or f"outbound.{trunk.name}@{socket.gethostname()}"
    bootstep.install(app, WorkerOptions(
        settings=settings, trunk=trunk, node=node_name, bind_host=sip_host, sip_port=sip_port,
    ))
    worker = app.Worker(
        hostname=node_name,
        queues=[dial_queue_name(trunk.name)],
        pool="threads",
        concurrency=concurrency,
        loglevel=loglevel,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
    )
    worker.start()
    sys.exit(worker.exitcode or 0)
