"""Where the demo keeps its data: PostgreSQL and Redis when configured, else embedded ones
(a SQLite file through SQLAlchemy, and an in-process Redis-protocol server for the broker and
the event streams)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.config.settings import hide_password

SQLITE_FILE = "outbound-demo.sqlite"


class BackendError(RuntimeError):
    """A configured PostgreSQL or Redis cannot be used; the message says which and why."""


@dataclass
class DemoBackends:
    database_url: str
    redis_url: str
    database_label: str  # what the demo tells the user it uses
    redis_label: str
    _closers: list[Any] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return bool(self._closers)

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()


def choose_backends(
    workdir: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> DemoBackends:
    """Flags first, then OUTBOUND_DATABASE_URL / OUTBOUND_REDIS_URL, else embedded ones."""
    env = os.environ if environ is None else environ
    backends = DemoBackends("", "", "", "")
    try:
        _choose_database(backends, workdir, database_url or env.get("OUTBOUND_DATABASE_URL"))
        _choose_redis(backends, redis_url or env.get("OUTBOUND_REDIS_URL"))
    except BaseException:
        backends.close()
        raise
    return backends


def _choose_database(backends: DemoBackends, workdir: Path, configured: str | None) -> None:
    if configured:
        from alembic.util import CommandError
        from sqlalchemy.exc import OperationalError

        from migrations import runner
        from models.db import database_url

        url = database_url(configured)
        shown = url.render_as_string(hide_password=True)
        try:
            runner.upgrade(url, "head")
        except (OperationalError, CommandError) as error:
            raise BackendError(f"cannot use the database {shown}: {error}") from None
        backends.database_url = url.render_as_string(hide_password=False)
        backends.database_label = f"{shown} (OUTBOUND_DATABASE_URL, migrated to head)"
        return
    path = (workdir / SQLITE_FILE).resolve()
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    backends.database_url = f"sqlite:///{path}"
    backends.database_label = (
        f"embedded SQLite file {path} (set OUTBOUND_DATABASE_URL for PostgreSQL)"
    )


def _choose_redis(backends: DemoBackends, configured: str | None) -> None:
    import redis

    if configured:
        client = redis.Redis.from_url(configured, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        except (redis.RedisError, OSError) as error:
            raise BackendError(f"cannot use Redis {hide_password(configured)}: {error}") from None
        finally:
            client.close()
        backends.redis_url = configured
        backends.redis_label = f"{hide_password(configured)} (OUTBOUND_REDIS_URL)"
        return
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise BackendError(
            "no OUTBOUND_REDIS_URL, and the embedded broker comes with the demo extra: "
            "pip install -e '.[demo]' (from a clone) or 'outbound[demo]', "
            "or point OUTBOUND_REDIS_URL at a Redis"
        ) from None
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    backends._closers.append(stop)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    backends.redis_url = f"redis://{host}:{port}/0"
    backends.redis_label = (
        f"embedded in-process Redis-protocol server at {host}:{port} "
        "(broker and event streams; set OUTBOUND_REDIS_URL for Redis)"
    )
