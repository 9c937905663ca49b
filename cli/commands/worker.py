"""`outbound worker --trunk T`: one pinned Celery worker running the trunk's signaling."""

from __future__ import annotations

import logging
import socket
import sys
from typing import TYPE_CHECKING

import click

from cli.commands._errors import exit_status_help, reports_errors, watch_services
from workers.config.settings import Settings, resolve_trunks, worker_tls
from workers.observability.log_format import LOG_FORMATS

if TYPE_CHECKING:
    from workers.observability.metrics import WorkerMetrics

log = logging.getLogger(__name__)


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
              help="Address the SIP sockets bind to and advertise.")
@click.option("--sip-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="UDP port of the SIP socket, TCP listens on it too, TLS on the next one "
                   "(0: any free ports).")
@click.option("--tls-cert-file", default=None, metavar="FILE",
              help="Certificate chain of the TLS listener (default: $OUTBOUND_TLS_CERT_FILE, "
                   "else the trunk's tls_cert_file).")
@click.option("--tls-key-file", default=None, metavar="FILE",
              help="Its private key (default: $OUTBOUND_TLS_KEY_FILE; none: in the "
                   "certificate file).")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Threads taking dial messages (each returns in milliseconds).")
@click.option("--prefetch", default=16, show_default=True, type=click.IntRange(1, 1000),
              help="Messages reserved per thread.")
@click.option("--drain-timeout", type=float, default=None,
              help="Seconds answered calls may go on after SIGTERM before they get a BYE "
                   "(default: $OUTBOUND_DRAIN_TIMEOUT or 30).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              envvar="OUTBOUND_METRICS_PORT",
              help="Serve Prometheus /metrics on this port (0: no metrics).")
@click.option("--metrics-host", default=None, metavar="HOST",
              help="Address the metrics server binds to (default: the --sip-host).")
@click.option("--task-events/--no-task-events", default=True, show_default=True,
              envvar="OUTBOUND_TASK_EVENTS",
              help="Send Celery task events (what Flower shows of tasks); off saves three "
                   "broker messages per dial message.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              envvar="OUTBOUND_LOG_FORMAT", help="json: one object per line, for collectors.")
@click.option("--log-level", default=None, envvar="OUTBOUND_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False),
              help="[default: INFO] DEBUG adds a line per call event.")
@click.option("--loglevel", "legacy_log_level", default=None, hidden=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@reports_errors
def command(
    trunk_name: str, trunks_file: str | None, node: str | None, sip_host: str, sip_port: int,
    tls_cert_file: str | None, tls_key_file: str | None, concurrency: int, prefetch: int,
    drain_timeout: float | None, metrics_port: int, metrics_host: str | None,
    task_events: bool, log_format: str, log_level: str | None, legacy_log_level: str | None,
) -> None:
    """Run one pinned worker for TRUNK: it consumes `dial.<trunk>` and its own direct queue,
    and runs the SIP UAC with its socket on one asyncio thread (threads pool: nothing forks
    after the socket exists). Redis, the broker and PostgreSQL (with its schema) must answer
    before it starts."""
    level = _log_level(log_level, legacy_log_level)
    settings = Settings.from_env(trunks_file=trunks_file, drain_timeout=drain_timeout,
                                 tls_cert_file=tls_cert_file, tls_key_file=tls_key_file)
    trunks = resolve_trunks(settings)
    trunk = worker_tls(
        trunks.get(trunk_name), settings, trunks_path=trunks.path,
        cert_setting="--tls-cert-file" if tls_cert_file else "OUTBOUND_TLS_CERT_FILE",
        key_setting="--tls-key-file" if tls_key_file else "OUTBOUND_TLS_KEY_FILE",
    )
    watch_services(settings)
    from cli.commands._preflight import (
        check_broker,
        check_database_schema,
        check_redis,
        check_sip_sockets,
    )

    check_sip_sockets(trunk.transport_config(sip_host, sip_port))
    metrics = _serve_metrics(trunk.name, metrics_port, metrics_host or sip_host)

    from workers.celery import bootstep
    from workers.celery.app import app, configure, worker_queues
    from workers.observability.attach import WorkerObservability
    from workers.observability.log_format import configure_logging
    from workers.runtime.worker import WorkerOptions

    configure(app, settings, worker_prefetch_multiplier=prefetch,
              worker_send_task_events=task_events)
    check_redis(settings.redis_url)
    check_broker(app)
    check_database_schema(settings.database_url)
    # Lines are written by a thread of their own: a slow log reader never stalls SIP.
    configure_logging(log_format, level, background=True)
    import workers.celery.tasks  # noqa: F401  (registers the tasks on the app)

    if metrics is not None:
        log.info("metrics on %s", metrics[1])
    observability = WorkerObservability(trunk.name, metrics[0] if metrics else None)
    node_name = node or f"outbound.{trunk.name}@{socket.gethostname()}"
    bootstep.install(app, WorkerOptions(
        settings=settings, trunk=trunk, node=node_name, bind_host=sip_host, sip_port=sip_port,
        observability=observability, groups=trunks.groups,
    ))
    worker = app.Worker(
        hostname=node_name,
        queues=worker_queues(trunk.name, node_name),  # dial.<trunk>, own control queue
        pool="threads",
        concurrency=concurrency,
        loglevel=level,
        quiet=log_format == "json",  # the banner is text: JSON collectors get log lines only
        # Heartbeat events tell Flower the worker is online (one message every 2 s). Gossip
        # and mingle stay off: with task events on, gossip has every worker consume every
        # other worker's events, which grows with the square of the worker count.
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=False,
        optimization="fair",
    )
    worker.start()
    sys.exit(worker.exitcode or 0)


def _log_level(log_level: str | None, legacy_log_level: str | None) -> str:
    """--log-level, else the old --loglevel spelling; either flag beats OUTBOUND_LOG_LEVEL."""
    from_env = click.get_current_context().get_parameter_source("log_level") is (
        click.core.ParameterSource.ENVIRONMENT)
    if legacy_log_level and (log_level is None or from_env):
        return legacy_log_level.upper()
    return (log_level or "INFO").upper()


def _serve_metrics(trunk: str, port: int, host: str) -> tuple[WorkerMetrics, str] | None:
    """Start the /metrics server (None when `port` is 0): the metrics and their URL. A port
    that cannot be bound is a usage error, found before any service is contacted."""
    if port == 0:
        return None
    from workers.observability.metrics import WorkerMetrics, start_metrics_server

    metrics = WorkerMetrics(trunk)
    try:
        server = start_metrics_server(port, metrics.registry, host=host)
    except OSError as error:
        raise click.BadParameter(f"cannot listen on {host}:{port}: {error.strerror or error}",
                                 param_hint="--metrics-port") from None
    return metrics, f"http://{host}:{server.port}/metrics"
