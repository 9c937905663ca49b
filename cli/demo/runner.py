"""`outbound demo` end to end: carrier simulator, a pinned worker, a small campaign from the
queue, its events live, its CDRs, and the report table at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from carrier.config import CarrierConfig, Outcome
from carrier.shell import BackgroundCarrier
from carrier.state import CarrierStats
from cli.demo.backends import DemoBackends, choose_backends
from cli.demo.progress import CampaignProgress, ProgressPrinter

DEMO_HANGUP_REASON = 'Q.850;cause=16;text="Normal call clearing"'
WORKER_STOP_TIMEOUT = 40.0


def default_weights() -> dict[Outcome, float]:
    return {Outcome.ANSWER: 0.6, Outcome.BUSY: 0.15, Outcome.NO_ANSWER: 0.1,
            Outcome.REJECT: 0.15}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    calls: int = 20
    weights: Mapping[Outcome, float] = field(default_factory=default_weights)
    ring: float = 1.0  # carrier: seconds of ringing before the final response
    hold: float = 2.0  # carrier: answered calls are hung up by the far end after this
    cps: float = 10.0
    ring_timeout: float = 4.0  # worker: CANCEL calls nobody answers after this
    workdir: Path = field(default_factory=Path.cwd)
    database_url: str | None = None
    redis_url: str | None = None
    seed: int | None = None
    timeout: float = 120.0
    show_events: bool = True


@dataclass
class DemoResult:
    progress: CampaignProgress
    carrier: CarrierStats | None
    report: str
    complete: bool
    worker_log: Path
    error: str | None = None


class DemoFailed(RuntimeError):
    """The demo could not run to the end; the message says what broke and where to look."""


class Demo:
    """One run; `run()` returns the result and always stops what it started."""

    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        if options.calls < 1:
            raise ValueError(f"calls must be at least 1, got {options.calls}")
        self.options = options
        self.out = out
        self.run_id = uuid.uuid4().hex[:6]
        self.workdir = options.workdir.resolve()
        self.worker_log = self.workdir / "outbound-demo-worker.log"
        self.trunks_file = self.workdir / "outbound-demo-trunks.toml"
        self.backends: DemoBackends | None = None
        self.carrier: BackgroundCarrier | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.progress = CampaignProgress(options.calls)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> DemoResult:
        started = datetime.now(UTC)
        carrier_stats: CarrierStats | None = None
        report = ""
        error: str | None = None
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.backends = choose_backends(self.workdir, database_url=self.options.database_url,
                                            redis_url=self.options.redis_url)
            self.say(f"database:        {self.backends.database_label}")
            self.say(f"broker + events: {self.backends.redis_label}")
            trunk = "demo" if self.backends.database_url.startswith("sqlite") \
                else f"demo-{self.run_id}"
            settings = self._settings()
            self._start_carrier()
            self._write_trunks_file(trunk)
            self._start_worker(trunk, settings)
            self._run_campaign(trunk, settings)
        except KeyboardInterrupt:
            error = "interrupted"
            self.say("\ninterrupted: stopping the worker and the carrier")
        except DemoFailed as failure:
            error = str(failure)
        finally:
            self._stop_worker()
            if self.carrier is not None:
                carrier_stats = self.carrier.stop()
            try:
                if self.backends is not None and self.progress.placed:
                    report = self._report(started)
            finally:
                if self.backends is not None:
                    self._forget_demo_keys()
                    self.backends.close()
        return DemoResult(self.progress, carrier_stats, report, self.progress.done,
                          self.worker_log, error)

    # ---- pieces ------------------------------------------------------------------------------

    def _settings(self) -> Any:
        from workers.config.settings import Settings

        assert self.backends is not None
        return Settings.from_env(env=self._worker_env())

    def _worker_env(self) -> dict[str, str]:
        assert self.backends is not None
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("OUTBOUND_")}
        env.update({
            "OUTBOUND_DATABASE_URL": self.backends.database_url,
            "OUTBOUND_REDIS_URL": self.backends.redis_url,
            "OUTBOUND_BROKER_URL": self.backends.redis_url,
            "OUTBOUND_KEY_PREFIX": f"outbound-demo-{self.run_id}",
            "OUTBOUND_TRUNKS_FILE": str(self.trunks_file),
            "OUTBOUND_DRAIN_TIMEOUT": "5",
        })
        return env

    def _start_carrier(self) -> None:
        options = self.options
        config = CarrierConfig(weights=options.weights, ring=options.ring, hold=options.hold,
                               remote_hangup_reason=DEMO_HANGUP_REASON)
        self.carrier = BackgroundCarrier(config, seed=options.seed).start()
        total = sum(options.weights.values())
        mix = ", ".join(f"{o.value.replace('_', '-')} {100 * w / total:.0f}%"
                        for o, w in options.weights.items() if w > 0)
        self.say(f"carrier:         simulator on 127.0.0.1:{self.carrier.port} ({mix}; rings "
                 f"{options.ring:g} s, hangs up answered calls after {options.hold:g} s)")

    def _write_trunks_file(self, trunk: str) -> None:
        assert self.carrier is not None
        options = self.options
        self.trunks_file.write_text(
            "# Written by `outbound demo`: one trunk to the built-in carrier simulator.\n"
            f"[trunks.{trunk}]\n"
            f'proxy = "127.0.0.1:{self.carrier.port}"\n'
            'transport = "udp"\n'
            f"cps = {options.cps}\n"
            f"max_concurrent = {max(options.calls, 1)}\n"
            f"ring_timeout = {options.ring_timeout}\n"
            "max_call_duration = 60\n"
            'caller_user = "+15550100"\n'
        )

    def _start_worker(self, trunk: str, settings: Any) -> None:
        command = [
            sys.executable, "-m", "cli.main", "worker", "--trunk", trunk,
            "--name", f"outbound.{trunk}@demo-{self.run_id}", "--sip-host", "127.0.0.1",
            "--sip-port", "0", "--concurrency", "4", "--log-format", "json",
        ]
        with self.worker_log.open("wb") as log:
            self.worker = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._worker_env(), cwd=Path(__file__).resolve().parents[2],
            )
        self.say(f"worker:          outbound worker --trunk {trunk} (pid {self.worker.pid}, "
                 f"log {self.worker_log})")

    def _run_campaign(self, trunk: str, settings: Any) -> None:
        from workers.client import DialClient
        from workers.config.settings import load_trunks
        from workers.events.stream import EventReader

        options = self.options
        trunks = load_trunks(self.trunks_file).trunks
        client = DialClient(settings, trunks=trunks)
        suffix = "" if trunk == "demo" else f"-{self.run_id}"
        for number in range(1, options.calls + 1):
            client.enqueue_dial(trunk, f"+1555010{number:04d}",
                                correlation_id=f"call-{number:02d}{suffix}")
        self.say(f"campaign:        {options.calls} calls queued on dial.{trunk} at "
                 f"{options.cps:g} calls/s\n")
        reader = EventReader(client.redis, settings, [trunk], from_start=True)
        printer = ProgressPrinter(self.progress, self.out, show_events=options.show_events)
        printer.refresh()
        deadline = time.monotonic() + options.timeout
        try:
            while not self.progress.done:
                if time.monotonic() > deadline:
                    raise DemoFailed(
                        f"only {len(self.progress.finished)} of {options.calls} calls ended "
                        f"within {options.timeout:g} s; see {self.worker_log}"
                    )
                if self.worker is not None and self.worker.poll() is not None:
                    raise DemoFailed(
                        f"the worker exited with status {self.worker.returncode}:\n"
                        + _tail(self.worker_log)
                    )
                for item in reader.read(block_ms=250):
                    printer.event(item.event)
        finally:
            printer.close()
            client.redis.close()

    def _stop_worker(self) -> None:
        worker = self.worker
        if worker is None or worker.poll() is not None:
            return
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)

    def _report(self, started: datetime) -> str:
        from models.db import make_engine
        from models.report_output import render_table
        from models.reporting import build_report

        assert self.backends is not None
        engine = make_engine(self.backends.database_url)
        try:
            rows = build_report(engine, since=started, by="trunk")
        finally:
            engine.dispose()
        trunk_rows = [row for row in rows if row.group and row.group.startswith("demo")]
        return render_table(trunk_rows, "trunk")

    def _forget_demo_keys(self) -> None:
        """In a real Redis, remove this run's streams, limits and queue (the embedded one just
        goes away)."""
        assert self.backends is not None
        if self.backends.embedded:
            return
        import redis

        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis.from_url(self.backends.redis_url, socket_timeout=3)
            keys = list(client.scan_iter(f"outbound-demo-{self.run_id}*"))
            keys += list(client.scan_iter(f"*dial.demo-{self.run_id}*"))
            if keys:
                client.delete(*keys)
            client.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def run_demo(options: DemoOptions, out: TextIO) -> DemoResult:
    return Demo(options, out).run()
