"""Kamailio 5.6 (Debian's package) as a real Record-Route proxy in tests: a config of the
test's own in a tmp dir, loopback ports only, a short `tcp_connection_lifetime` so that the
idle close a stock Kamailio does after 120 s happens within the test."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.sipp.harness import LOOPBACK, TestPki, _tcp_port_accepting
from tests.waiting import wait_until

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

# in-dialog requests: our Record-Route, else (a UAS that sends no Route) the Request-URI
_ROUTE_START = """
request_route {
    if (has_totag()) {
        loose_route();
        t_relay();
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) { t_relay(); }
        exit;
    }
"""
_ROUTES = _ROUTE_START + """
    record_route();
    $du = "sip:%(next_hop)s";
    t_relay();
}
"""


@dataclass
class Kamailio:
    """A Record-Route proxy on `port` (UDP and TCP, TLS on `tls_port` when `pki` is given)
    relaying initial requests to `next_hop` (host:port, UDP) and in-dialog ones by Route or
    Request-URI."""

    port: int
    next_hop: str
    workdir: Path
    lifetime: int = 3  # tcp_connection_lifetime: seconds before an idle connection is closed
    pki: TestPki | None = None
    tls_port: int | None = None
    accept_aliases: bool = False  # tcp_accept_aliases: honour our Via ;alias (RFC 5923)
    # A test's own routing (its request_route replaces the proxy's), and what it needs loaded.
    routes: str = ""
    extra_modules: tuple[str, ...] = ()
    extra_params: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        lines = [
            "#!KAMAILIO",
            "debug=2", "log_stderror=yes", "children=2", "tcp_children=2", "auto_aliases=no",
            f"listen=udp:{LOOPBACK}:{self.port}", f"listen=tcp:{LOOPBACK}:{self.port}",
            f"tcp_connection_lifetime={self.lifetime}",
            f"tcp_accept_aliases={'yes' if self.accept_aliases else 'no'}",
            f'mpath="{MODULES}"',
        ]  # fmt: skip
        if self.pki is not None:
            assert self.tls_port is not None
            lines += ["enable_tls=yes", f"listen=tls:{LOOPBACK}:{self.tls_port}"]
        for module in ("tm", "sl", "rr", "siputils", "pv", "textops", *self.extra_modules):
            lines.append(f'loadmodule "{module}.so"')
        lines += list(self.extra_params)
        if self.pki is not None:
            tls_cfg = self.workdir / "tls.cfg"
            tls_cfg.write_text(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                f"require_certificate = no\nprivate_key = {self.pki.key_file}\n"
                f"certificate = {self.pki.cert_file}\n\n"
                "[client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\n"
                f"require_certificate = yes\nca_list = {self.pki.ca_file}\n"
            )
            lines += ['loadmodule "tls.so"', f'modparam("tls", "config", "{tls_cfg}")',
                      f'modparam("tls", "connection_timeout", {self.lifetime})']
        routes = self.routes or _ROUTES
        return "\n".join(lines) + "\n" + routes % {"next_hop": self.next_hop}

    def start(self, ready_timeout: float = 10.0) -> Kamailio:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "kamailio.cfg"
        config.write_text(self.config())
        log = (self.workdir / "kamailio.log").open("wb")
        self.process = subprocess.Popen(
            [KAMAILIO, "-f", str(config), "-DD", "-E", "-Y", str(self.workdir),
             "-P", str(self.workdir / "kamailio.pid"), "-m", "32", "-M", "8"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        wait_until(
            lambda: all(_tcp_port_accepting(p) for p in ports) or self.exited,
            ready_timeout, f"kamailio to listen on {ports}",
        )
        if self.exited:
            raise RuntimeError(f"kamailio exited at start:\n{self.log()[-3000:]}")
        return self

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def log(self) -> str:
        path = self.workdir / "kamailio.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# A registrar with digest auth (static password, no database) that relays INVITEs only from
# a user whose binding is in force (usrloc in memory): a trunk that must REGISTER first.
REGISTRAR_ROUTES = _ROUTE_START.replace("%", "%%") + """
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$td", "%(password)s", "0")) {
            www_challenge("$td", "0");
            exit;
        }
        if ($au != "%(user)s") { sl_send_reply("403", "Wrong user"); exit; }
        save("location");
        exit;
    }
    if (is_method("INVITE") && !registered("location", "sip:%(user)s@$fd")) {
        sl_send_reply("403", "Not registered");
        exit;
    }
    record_route();
    $du = "sip:%%(next_hop)s";
    t_relay();
}
"""


def registrar(port: int, next_hop: str, workdir: Path, *, user: str,
              password: str) -> Kamailio:
    """A Kamailio registrar (digest, `user`/`password`) and proxy towards `next_hop`."""
    return Kamailio(
        port, next_hop, workdir,
        routes=REGISTRAR_ROUTES % {"user": user, "password": password},
        extra_modules=("auth", "usrloc", "registrar"),
        extra_params=('modparam("registrar", "min_expires", 10)',),
    )
