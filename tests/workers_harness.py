"""Private Redis and PostgreSQL servers for the workers' fault tests, and waiting helpers.

Fault tests stop and start servers; they do it to servers of their own on free ports, never
to the shared ones on 6379/5432 that other tests are using at the same time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PG_BIN = next(
    (p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/bin")
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the condition may fail while a server restarts
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A redis-server of our own (nothing kept on disk: a restart empties it, like CI's;
    with `appendonly`, an AOF in its own directory keeps what it had across restarts)."""

    def __init__(self, port: int | None = None, *, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="outbound-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", "always", "--dir", self._dir, "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.port), 10, f"redis-server on port {self.port}")
        return self

    def stop(self, *, graceful: bool = False) -> None:
        """kill -9 (default), or SIGTERM: Redis writes its AOF and exits."""
        if self._process is None:
            return
        if graceful:
            self._process.terminate()
        else:
            self._process.kill()
        self._process.wait(timeout=10)
        self._process = None
        wait_for(lambda: not _port_open(self.port), 10, f"redis port {self.port} to close")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class PostgresCluster:
    """A PostgreSQL cluster of our own, run as the postgres user, trust auth on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="outbound-pg-"))
        self.data = self._dir / "data"
        shutil.chown(self._dir, "postgres", "postgres")
        self._as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self._dir}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n"
            )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, command: list[str]) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )

    def start(self) -> PostgresCluster:
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self._dir / "log"),
             "-w", "-t", "30", "start"]
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"]
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self._dir, ignore_errors=True)


REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)  # the interpreter running the tests, with the project installed


class WorkerProcess:
    """`outbound worker` as a real process (started with its own environment)."""

    def __init__(
        self,
        *,
        trunk: str,
        trunks_file: Path,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 4,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.trunk = trunk
        self.name = name
        self._args = [
            str(PYTHON), "-m", "cli.main", "worker", "--trunk", trunk,
            "--trunks", str(trunks_file), "--name", name,
            "--concurrency", str(concurrency), "--loglevel", "INFO", *extra_args,
        ]
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_dir / f"worker-{name.replace('@', '_')}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self._args, cwd=REPO_ROOT, env=self._env, stdout=log_file,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain) and wait for the exit code."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9: no drain, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
