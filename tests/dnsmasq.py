"""Debian's dnsmasq as a real DNS server on a loopback port, serving a test's own records."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.resolver

from tests.sipp.harness import LOOPBACK, free_ports
from tests.waiting import wait_until

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"  # scripts/setup.sh installs it


@dataclass
class Dnsmasq:
    """`records` are dnsmasq options (`--srv-host=...`, `--naptr-record=...`,
    `--host-record=...`); the server knows only `domain` and answers NXDOMAIN for the rest of
    it, with `ttl` on every record. `restart` serves other records on the same port."""

    workdir: Path
    domain: str
    records: Sequence[str]
    ttl: int = 5
    port: int = field(default_factory=free_ports)
    process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        return [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",  # not Debian's /etc/dnsmasq.conf
            "--pid-file=",  # no pid file: the test owns the process
            f"--port={self.port}",
            f"--listen-address={LOOPBACK}",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--no-negcache",
            f"--local=/{self.domain}/",
            f"--local-ttl={self.ttl}",
            "--log-facility=-",
            "--log-queries",
            *self.records,
        ]

    def start(self) -> Dnsmasq:
        log = (self.workdir / f"dnsmasq-{self.port}.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 5.0, f"dnsmasq answering on {self.nameserver}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"dnsmasq exited with {self.process.returncode}: {self.log()}")
        probe = dns.resolver.Resolver(configure=False)
        probe.nameservers, probe.port, probe.lifetime = [LOOPBACK], self.port, 0.3
        try:
            probe.resolve(f"probe.{self.domain}.", "A")
        except dns.resolver.NXDOMAIN:
            return True  # it answers (and knows nothing of the probe name)
        except dns.exception.DNSException:
            return False
        return True

    def log(self) -> str:
        path = self.workdir / f"dnsmasq-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self, records: Sequence[str]) -> None:
        self.stop()
        self.records = records
        self.start()
