"""A whole dialing stack for end-to-end tests: its own Redis, database, SIPp far ends, worker
processes and a scheduler client, plus the checks every such test makes."""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import text

from models.repository import Repository
from tests.sipp.harness import LOOPBACK, Sipp, free_ports
from tests.workers_harness import PYTHON, REPO_ROOT, RedisServer, WorkerProcess, wait_for
from workers.client import DialClient, QueuedDial
from workers.config.settings import Settings
from workers.events.stream import REDIS_UNAVAILABLE, EventReader, StreamEvent

TERMINAL = {"failed", "cancelled", "ended"}


class Stack:
    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        *,
        trunk: str = "t1",
        cps: float = 200,
        max_concurrent: int = 200,
        redis_server: RedisServer | None = None,
        heartbeat_ttl: float = 2.0,
        drain_timeout: float = 3.0,
        broker_url: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.trunk = trunk
        self.redis_server = redis_server or RedisServer().start()
        self._own_redis = redis_server is None
        # the broker: the stack's Redis, or another URL (a RabbitMQ vhost of the test's own)
        self.broker_url = broker_url or self.redis_server.url
        self.settings = Settings(
            database_url=database_url, redis_url=self.redis_server.url,
            broker_url=self.broker_url, heartbeat_ttl=heartbeat_ttl,
            drain_timeout=drain_timeout, visibility_timeout=30,
        )
        self.env = {
            "OUTBOUND_DATABASE_URL": database_url,
            "OUTBOUND_REDIS_URL": self.redis_server.url,
            "OUTBOUND_BROKER_URL": self.broker_url,
            "OUTBOUND_HEARTBEAT_TTL": str(heartbeat_ttl),
            "OUTBOUND_DRAIN_TIMEOUT": str(drain_timeout),
            "OUTBOUND_VISIBILITY_TIMEOUT": "30",
        }
        self.cps = cps
        self.max_concurrent = max_concurrent
        self.sipps: list[Sipp] = []
        self.carriers: list[CarrierProcess] = []
        self.workers: list[WorkerProcess] = []
        self.trunks_file = tmp_path / "trunks.toml"
        self.proxy = ""
        self.client: DialClient | None = None
        self.repository = Repository.from_url(database_url)
        self.redis: redis.Redis[Any] = redis.Redis.from_url(
            self.redis_server.url, socket_timeout=2, socket_connect_timeout=2
        )

    # --- far ends ------------------------------------------------------------------------------

    def sipp(self, scenario: str, calls: int, *, hold_ms: int = 0, **keys: str) -> Sipp:
        port = free_ports(1)
        all_keys = {"adv_host": LOOPBACK, "adv_port": str(port), "adv_transport": "udp", **keys}
        extra = ("-d", str(hold_ms)) if hold_ms else ()
        far_end = Sipp(scenario, port, "udp", self.tmp_path / f"sipp-{len(self.sipps)}", calls,
                       all_keys, extra).start()
        self.sipps.append(far_end)
        return far_end

    def carrier(self, *options: str) -> CarrierProcess:
        """The project's carrier simulator (answers new transactions at their source)."""
        far_end = CarrierProcess(free_ports(1), options, self.tmp_path).start()
        self.carriers.append(far_end)
        return far_end

    def configure_trunk(self, proxy: Sipp | CarrierProcess | int, extra: str = "") -> None:
        """The trunk towards a far end (or a port of a proxy the test runs); `extra` is more
        TOML lines for its table."""
        self.proxy = f"{LOOPBACK}:{proxy if isinstance(proxy, int) else proxy.port}"
        self.write_trunks(
            f'[trunks.{self.trunk}]\nproxy = "{self.proxy}"\ntransport = "udp"\n'
            f"cps = {self.cps}\nmax_concurrent = {self.max_concurrent}\n"
            'caller_user = "+15550100"\nring_timeout = 60\nmax_call_duration = 120\n'
            + extra
        )

    def write_trunks(self, text: str) -> None:
        """Use this trunks file (TOML text) from now on, with a client that reads it."""
        self.trunks_file.write_text(text)
        self.settings = self.settings.model_copy(update={"trunks_file": str(self.trunks_file)})
        self.client = DialClient(self.settings, repository=self.repository)

    # --- workers -------------------------------------------------------------------------------

    def start_worker(
        self, name: str, *, concurrency: int = 4, wait: bool = True, sip_port: int = 0,
        prefetch: int | None = None, metrics_port: int = 0,
    ) -> WorkerProcess:
        extra: tuple[str, ...] = () if prefetch is None else ("--prefetch", str(prefetch))
        if metrics_port:
            extra += ("--metrics-port", str(metrics_port))
        worker = WorkerProcess(
            trunk=self.trunk, trunks_file=self.trunks_file, name=name, env=self.env,
            log_dir=self.tmp_path, concurrency=concurrency,
            extra_args=("--sip-port", str(sip_port), *extra),
        ).start()
        self.workers.append(worker)
        if wait:
            self.wait_worker_ready(worker)
        return worker

    def wait_worker_ready(self, worker: WorkerProcess, timeout: float = 30) -> None:
        key = self.settings.key("workers", worker.name)

        def ready() -> bool:
            if not worker.running():
                raise AssertionError(f"worker {worker.name} exited:\n{worker.log()[-4000:]}")
            # The heartbeat key is written early in the start; "serving trunk" is logged once
            # the first maintenance round (recovery, re-publishing queued dials after a broker
            # reset) is done. A dial enqueued before that is re-published too (a harmless
            # duplicate, but one more log line about the leg).
            return bool(self.redis.exists(key)) and "serving trunk" in worker.log()

        wait_for(ready, timeout, f"worker {worker.name} to start")

    # --- scheduling ----------------------------------------------------------------------------

    def enqueue(self, count: int, *, prefix: str = "c", to_host: str | None = None,
                **fields: Any) -> list[QueuedDial]:
        assert self.client is not None, "configure_trunk first"
        host = to_host or self.proxy
        queued = []
        for index in range(count):
            queued.append(self.client.enqueue_dial(
                self.trunk, f"sip:+1555{index:07d}@{host}",
                correlation_id=f"{prefix}-{index}-{uuid.uuid4().hex[:6]}", **fields,
            ))
        return queued

    # --- reading results -----------------------------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.repository.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def leg_states(self) -> dict[str, str]:
        return {str(r[0]): r[1] for r in self.rows("SELECT id, state FROM legs")}

    def wait_states(self, leg_ids: Iterable[str], states: set[str], timeout: float) -> None:
        wanted = list(leg_ids)

        def reached() -> bool:
            current = self.leg_states()
            return all(current.get(leg) in states for leg in wanted)

        wait_for(reached, timeout, f"{len(wanted)} legs to reach {sorted(states)}")

    def cdrs(self) -> dict[str, Any]:
        rows = self.rows("SELECT leg_id, correlation_id, disposition, hangup_by, hangup_reason,"
                         " reason_text, final_status_code, call_id FROM cdrs")
        return {str(row[0]): row for row in rows}

    def wait_cdrs(self, leg_ids: Iterable[str], timeout: float) -> dict[str, Any]:
        wanted = set(leg_ids)
        wait_for(lambda: wanted <= set(self.cdrs()), timeout, f"CDRs of {len(wanted)} legs")
        return self.cdrs()

    def stream_events(self, trunk: str | None = None) -> list[StreamEvent]:
        entries = self.redis.xrange(self.settings.events_stream(trunk or self.trunk))
        return [EventReader._decode([[b"s", [entry]]])[0].event for entry in entries]

    def settled_events(self, leg_ids: Iterable[str], timeout: float = 30
                       ) -> dict[str, list[StreamEvent]]:
        """Each leg's events once every named leg's terminal event is on the stream: the outbox
        relay publishes after the CDR commits, so a CDR alone does not mean the event is there."""
        wanted = set(leg_ids)
        wait_for(lambda: {e.leg_id for e in self.stream_events() if e.state in TERMINAL}
                 >= wanted, timeout, f"terminal events of {len(wanted)} legs")
        return events_by_leg(self.stream_events())

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        for far_end in self.sipps:
            far_end.stop()
        for carrier in self.carriers:
            carrier.close()
        if self.client is not None:
            self.client.redis.close()
        self.redis.close()
        self.repository.engine.dispose()
        if self._own_redis:
            self.redis_server.close()


class CarrierProcess:
    """`outbound carrier` listening on a loopback UDP port."""

    def __init__(self, port: int, options: tuple[str, ...], log_dir: Path) -> None:
        self.port = port
        self._args = [str(PYTHON), "-m", "cli.main", "carrier", "--listen",
                      f"{LOOPBACK}:{port}", "--transport", "udp", *options]
        self.log_path = log_dir / f"carrier-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CarrierProcess:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(self._args, cwd=REPO_ROOT, stdout=log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def bound() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((LOOPBACK, self.port))
                except OSError:
                    return True
            return False

        wait_for(bound, 15, f"carrier on port {self.port}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def events_by_leg(events: Iterable[StreamEvent]) -> dict[str, list[StreamEvent]]:
    """Each leg's events in stream order, repeats (same event_id) dropped."""
    seen: set[str] = set()
    legs: dict[str, list[StreamEvent]] = defaultdict(list)
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        legs[event.leg_id].append(event)
    return legs


def assert_complete_event_history(
    legs: dict[str, list[StreamEvent]], leg_ids: Iterable[str]
) -> None:
    """Every leg: seq 1, 2, 3, ... in order, starting with 'invited' unless it failed before
    its INVITE, and exactly one terminal event, the last."""
    for leg_id in leg_ids:
        history = legs.get(leg_id)
        assert history, f"no events for leg {leg_id}"
        seqs = [event.seq for event in history]
        assert seqs == list(range(1, len(seqs) + 1)), f"leg {leg_id}: seqs {seqs}"
        states = [event.state for event in history]
        terminals = [state for state in states if state in TERMINAL]
        assert len(terminals) == 1 and states[-1] in TERMINAL, f"leg {leg_id}: {states}"


class EventCollector:
    """Reads the trunk stream in a consumer group in a thread, through Redis restarts."""

    def __init__(self, stack: Stack) -> None:
        self._client: redis.Redis[Any] = redis.Redis.from_url(
            stack.redis_server.url, socket_timeout=2, socket_connect_timeout=1
        )
        self._reader = EventReader(self._client, stack.settings, [stack.trunk], group="tests")
        self.events: list[StreamEvent] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._reader.read(block_ms=200)
                self._reader.ack(batch)
            except REDIS_UNAVAILABLE:
                self._stop.wait(0.2)
                continue
            with self._lock:
                self.events.extend(item.event for item in batch)

    def snapshot(self) -> list[StreamEvent]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()
