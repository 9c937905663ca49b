"""Run SIPp (and stunnel for TLS) as a real far end in tests: ports, test PKI, stats, fixtures."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.waiting import wait_until

SCENARIO_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
SIPP = shutil.which("sipp")
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")

# scripts/setup.sh installs SIPp and stunnel4: when missing, a test fails; it never skips.
requires_sipp = pytest.mark.sipp
requires_stunnel = pytest.mark.sipp


# -- ports ------------------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def free_ports(count: int = 1) -> int:
    """First of `count` consecutive loopback ports free for both UDP and TCP right now.

    Random bases keep tests run side by side (several engineers, one machine) apart.
    """
    rng = random.SystemRandom()
    for _ in range(500):
        base = rng.randrange(20_000, 60_000 - count)
        if all(_port_is_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free loopback ports found")


def _udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def _tcp_port_accepting(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


# -- a throwaway PKI ------------------------------------------------------------------------


@dataclass(frozen=True)
class TestPki:
    """A test CA and one server certificate signed by it, as PEM files."""

    __test__ = False  # not a test class, despite the name

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        dns_names: tuple[str, ...] = ("localhost",),
        ip_addresses: tuple[str, ...] = (LOOPBACK,),
    ) -> TestPki:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        common_name = dns_names[0] if dns_names else ip_addresses[0]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        ca_file = directory / "ca.pem"
        cert_file = directory / "server.pem"
        key_file = directory / "server.key"
        ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cls(ca_file=ca_file, cert_file=cert_file, key_file=key_file)


# -- SIPp -----------------------------------------------------------------------------------


def _read_semicolon_csv_last_row(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    values = lines[-1].split(";")
    return dict(zip(header, values, strict=False))


@dataclass
class SippResult:
    """What SIPp reported when it exited."""

    exit_code: int
    stats: dict[str, str]
    counts: dict[str, str]
    output: str
    errors: str
    messages: str

    def stat(self, name: str) -> int:
        """A cumulative counter, e.g. stat("SuccessfulCall") reads "SuccessfulCall(C)"."""
        return int(self.stats.get(f"{name}(C)", "0") or 0)

    @property
    def successful_calls(self) -> int:
        return self.stat("SuccessfulCall")

    @property
    def failed_calls(self) -> int:
        return self.stat("FailedCall")

    def message_count(self, index: int, name: str, column: str = "Recv") -> int:
        """Per-scenario-element counter, e.g. message_count(0, "INVITE", "Retrans")."""
        return int(self.counts.get(f"{index}_{name}_{column}", "0") or 0)

    def message_log(self) -> list[tuple[float, str, str]]:
        """(epoch seconds, "sent" | "received", start line) of every message SIPp logged."""
        entries = []
        pattern = re.compile(
            r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n\w+ message (sent|received)"
            r"[^\n]*\n\n([^\n]*)",
            re.M,
        )
        for stamp, direction, start_line in pattern.findall(self.messages):
            when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
            entries.append((when, direction, start_line.strip()))
        return entries

    def explain(self) -> str:
        """Everything useful for an assertion message when SIPp did not see what we meant."""
        return (
            f"sipp exit code {self.exit_code}, successful={self.successful_calls} "
            f"failed={self.failed_calls}\n--- sipp errors ---\n{self.errors[-4000:]}\n"
            f"--- sipp messages ---\n{self.messages[-6000:]}"
        )


@dataclass
class Sipp:
    """One SIPp process playing `scenario` on a loopback port."""

    scenario: str  # file name under tests/sipp/ or "uas"/"uac" for the built-in ones
    port: int
    transport: str  # "udp" | "tcp"
    workdir: Path
    calls: int = 1
    keys: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    remote: str | None = None  # host:port to call (UAC scenarios)
    process: subprocess.Popen[bytes] | None = None
    _stdout: Path | None = None

    def command(self) -> list[str]:
        assert SIPP is not None, "sipp is not installed"
        name = self.scenario
        if name in ("uas", "uac"):
            scenario_args = ["-sn", name]
        else:
            scenario_args = ["-sf", str(SCENARIO_DIR / name)]
        args = [SIPP, *scenario_args]
        if self.remote:
            args.append(self.remote)
        args += [
            "-i", LOOPBACK, "-p", str(self.port),
            "-t", "u1" if self.transport == "udp" else "t1",
            "-m", str(self.calls),
            "-nostdin",
            "-trace_stat", "-stf", str(self.workdir / "stats.csv"), "-fd", "1",
            "-trace_err", "-error_file", str(self.workdir / "errors.log"),
            "-trace_msg", "-message_file", str(self.workdir / "messages.log"),
            "-trace_counts",
        ]  # fmt: skip
        for key, value in self.keys.items():
            args += ["-key", key, value]
        return args + list(self.extra_args)

    def start(self, ready_timeout: float = 5.0) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stdout = self.workdir / "stdout.txt"
        with self._stdout.open("wb") as out:
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        if self.remote is None:
            probe = _udp_port_bound if self.transport == "udp" else _tcp_port_accepting
            wait_until(
                lambda: probe(self.port) or self.process is None or self.process.poll() is not None,
                ready_timeout,
                f"sipp to listen on {self.transport} port {self.port}",
            )
            if self.process.poll() is not None:
                raise RuntimeError(f"sipp exited at start:\n{self._read(self._stdout)[-3000:]}")
        return self

    def wait(self, timeout: float = 30.0) -> SippResult:
        """Wait for SIPp to finish its calls; kill it (and fail) after `timeout` seconds."""
        assert self.process is not None, "sipp was not started"
        try:
            exit_code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            result = self.result()
            raise TimeoutError(
                f"sipp still running after {timeout} s\n{result.explain()}"
            ) from None
        return self._result(exit_code)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGUSR1)  # SIPp: quit gracefully (dump the stats)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=3)

    def result(self) -> SippResult:
        """What SIPp reported so far; exit_code -999 while it still runs."""
        assert self.process is not None
        exit_code = self.process.poll()
        return self._result(-999 if exit_code is None else exit_code)

    def _result(self, exit_code: int) -> SippResult:
        counts_files = sorted(self.workdir.glob("*_counts.csv"))
        stats_file = self.workdir / "stats.csv"
        return SippResult(
            exit_code=exit_code,
            stats=_read_semicolon_csv_last_row(stats_file) if stats_file.exists() else {},
            counts=_read_semicolon_csv_last_row(counts_files[-1]) if counts_files else {},
            output=self._read(self._stdout),
            errors=self._read(self.workdir / "errors.log"),
            messages=self._read(self.workdir / "messages.log"),
        )

    @staticmethod
    def _read(path: Path | None) -> str:
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")


# -- stunnel (TLS in front of SIPp's TCP mode) ------------------------------------------------


@dataclass
class Stunnel:
    """stunnel4 accepting TLS on `accept_port` and forwarding plain TCP to `connect_port`."""

    accept_port: int
    connect_port: int
    pki: TestPki
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 5.0) -> Stunnel:
        assert STUNNEL is not None, "stunnel4 is not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "stunnel.conf"
        config.write_text(
            "foreground = yes\n"
            "debug = 4\n"
            f"output = {self.workdir / 'stunnel.log'}\n"
            "[sip]\n"
            f"accept = {LOOPBACK}:{self.accept_port}\n"
            f"connect = {LOOPBACK}:{self.connect_port}\n"
            f"cert = {self.pki.cert_file}\n"
            f"key = {self.pki.key_file}\n"
        )
        self.process = subprocess.Popen(
            [STUNNEL, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(
            lambda: _tcp_port_accepting(self.accept_port) or self.process.poll() is not None,  # type: ignore[union-attr]
            ready_timeout,
            f"stunnel to accept on port {self.accept_port}",
        )
        if self.process.poll() is not None:
            log = self.workdir / "stunnel.log"
            raise RuntimeError(
                f"stunnel exited at start: {log.read_text() if log.exists() else ''}"
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=3)


# -- a far end over any transport -----------------------------------------------------------


@dataclass
class SipPeer:
    """A SIPp far end reachable over udp, tcp or tls (stunnel in front of SIPp's TCP)."""

    transport: str
    host: str  # what we dial: "localhost" for TLS, so the certificate name is checked
    port: int  # where we send (stunnel's port for TLS)
    sipp: Sipp
    stunnel: Stunnel | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wait(self, timeout: float = 30.0) -> SippResult:
        return self.sipp.wait(timeout)

    def stop(self) -> None:
        self.sipp.stop()
        if self.stunnel is not None:
            self.stunnel.stop()


class SipPeerFactory:
    """Start SIPp far ends for one test and stop every one of them at teardown."""

    def __init__(self, workdir: Path, pki_factory: Callable[[], TestPki]) -> None:
        self.workdir = workdir
        self._pki_factory = pki_factory
        self._peers: list[SipPeer] = []

    def start(
        self,
        scenario: str,
        transport: str = "udp",
        *,
        calls: int = 1,
        keys: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> SipPeer:
        """Start `scenario`; its `[adv_host]`, `[adv_port]` and `[adv_transport]` keys give the
        address the far end is reached at (the stunnel port for TLS), for Contact and Route."""
        base = free_ports(2)
        index = len(self._peers)
        workdir = self.workdir / f"peer{index}-{transport}"
        all_keys = dict(keys or {})
        if transport == "tls":
            tls_port, sipp_port = base, base + 1
            all_keys.setdefault("adv_host", "localhost")
            all_keys.setdefault("adv_port", str(tls_port))
            all_keys.setdefault("adv_transport", "tls")
            sipp = Sipp(scenario, sipp_port, "tcp", workdir, calls, all_keys, extra_args)
            stunnel = Stunnel(tls_port, sipp_port, self._pki_factory(), workdir)
            peer = SipPeer("tls", "localhost", tls_port, sipp, stunnel)
            self._peers.append(peer)
            sipp.start()
            stunnel.start()
            return peer
        all_keys.setdefault("adv_host", LOOPBACK)
        all_keys.setdefault("adv_port", str(base))
        all_keys.setdefault("adv_transport", transport)
        sipp = Sipp(scenario, base, transport, workdir, calls, all_keys, extra_args)
        peer = SipPeer(transport, LOOPBACK, base, sipp)
        self._peers.append(peer)
        sipp.start()
        return peer

    def stop_all(self) -> None:
        for peer in self._peers:
            with contextlib.suppress(Exception):
                peer.stop()


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A throwaway CA and a `localhost` / 127.0.0.1 server certificate for the session."""
    return TestPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sip_peers(tmp_path: Path, test_pki: TestPki) -> Iterator[SipPeerFactory]:
    """Start SIPp far ends (any transport) that are stopped when the test ends."""
    factory = SipPeerFactory(tmp_path, lambda: test_pki)
    try:
        yield factory
    finally:
        factory.stop_all()


def sipp_environment_ok() -> bool:
    return SIPP is not None and os.access(SIPP, os.X_OK)
