"""Reach the services a command depends on before it starts work, so that a down one is
reported (by `reports_errors`: which service, at which URL) before anything is stored or run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.commands._errors import ServiceUnavailable
from workers.config.settings import hide_password

if TYPE_CHECKING:
    from celery import Celery

    from workers.signaling.transports import TransportConfig

TIMEOUT = 5.0  # seconds per service: a refused connection fails at once, a black hole here


def check_redis(url: str) -> None:
    """PING Redis; redis' ConnectionError when it does not answer."""
    import redis

    client: redis.Redis[bytes] = redis.Redis.from_url(
        url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker(app: Celery) -> None:
    """Open one broker connection; kombu's OperationalError when it cannot."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=TIMEOUT)


def check_database_schema(url: str) -> None:
    """Connect to PostgreSQL and make sure the schema exists (SQLite, the demo's embedded
    database, gets its schema when first used). OperationalError when it cannot connect."""
    from migrations import runner
    from models.db import database_url, is_sqlite

    chosen = database_url(url)
    if is_sqlite(chosen):
        return
    if runner.current_revision(chosen) is None:
        raise ServiceUnavailable(
            f"the database {hide_password(chosen)} has no outbound schema: run `outbound migrate`"
        )


def check_sip_sockets(config: TransportConfig) -> None:
    """Bind the SIP sockets the worker will bind (UDP, TCP, TLS) and let them go again, so
    that a port in use or a host that is not ours is reported before anything starts.
    ConfigFailure (exit 2, one line) naming --sip-host/--sip-port and what could not be bound."""
    import asyncio

    from cli.commands._errors import ConfigFailure
    from workers.signaling.transports import Transports

    async def probe() -> None:
        transports = Transports(config, lambda *_: None, lambda *_: None)
        try:
            await transports.start()
        finally:
            await transports.close()

    try:
        asyncio.run(probe())
    except OSError as error:
        raise ConfigFailure(
            f"--sip-host {config.bind_host} --sip-port {config.udp_port}: {error.strerror or error}"
        ) from None
