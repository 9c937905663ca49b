"""`outbound trunks check`: send SIP OPTIONS to each trunk and print reachability and RTT."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from dataclasses import asdict, dataclass

import click
import redis

from carrier.shell import advertised_host
from cli.commands._errors import exit_status_help, reports_errors
from sipstack.errors import SipParseError
from sipstack.message import Request, Response, parse_message
from sipstack.transport import Address, Transport
from sipstack.uri import format_hostport
from workers.config.settings import Settings, TrunkConfig, resolve_trunks
from workers.signaling.registrations import read_statuses, registration_summary
from workers.signaling.transports import Transports

EXIT_ALL_REACHABLE = 0
EXIT_SOME_UNREACHABLE = 1
T1, T2 = 0.5, 4.0

@dataclass(frozen=True, slots=True)
class PingResult:
    trunk: str
    proxy: str
    transport: str
    status: int | None
    reason: str
    rtt_ms: float | None
    sent: int  # OPTIONS sent, retransmissions included
    error: str | None

    @property
    def reachable(self) -> bool:
        return self.status is not None


class _Probe:
    def __init__(self, trunk: TrunkConfig, address: Address, branch: str) -> None:
        self.trunk = trunk
        self.address = address
        self.branch = branch
        self.data = b""
        self.first_sent = 0.0
        self.sent = 0
        self.interval = T1
        self.done: asyncio.Future[PingResult] = asyncio.get_running_loop().create_future()

    def finish(self, status: int | None, reason: str, error: str | None) -> None:
        if self.done.done():
            return
        rtt = (time.monotonic() - self.first_sent) * 1000 if status is not None else None
        self.done.set_result(PingResult(
            trunk=self.trunk.name, proxy=self.trunk.proxy, transport=self.trunk.transport.value,
            status=status, reason=reason, rtt_ms=rtt, sent=self.sent, error=error,
        ))


class OptionsPinger:
    """Pings trunks over the worker's own transports (same TLS checks, same name resolution)."""

    def __init__(self, *, bind_host: str = "0.0.0.0", timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._bind_host = bind_host
        self._probes: dict[str, _Probe] = {}
        self._transports: dict[str, Transports] = {}

    async def ping(self, trunks: list[TrunkConfig]) -> list[PingResult]:
        try:
            for trunk in trunks:  # each trunk with its own TLS CA and client certificate
                config = dataclasses.replace(
                    trunk.transport_config(self._bind_host, 0), connect_timeout=self.timeout,
                    tls_server_cert_file=None, tls_server_key_file=None,
                )
                transports = Transports(config, self._on_receive, self._on_lost)
                self._transports[trunk.name] = transports
                await transports.start()
            probes = [self._start(trunk) for trunk in trunks]
            return list(await asyncio.gather(*(self._wait(p) for p in probes)))
        finally:
            for transports in self._transports.values():
                await transports.close()
            self._transports.clear()

    def _start(self, trunk: TrunkConfig) -> _Probe:
        address = trunk.proxy_address
        probe = _Probe(trunk, address, f"z9hG4bK{secrets.token_hex(8)}")
        probe.data = self._options(trunk, address, probe.branch).to_bytes()
        self._probes[probe.branch] = probe
        probe.first_sent = time.monotonic()
        self._send(probe)
        return probe

    def _options(self, trunk: TrunkConfig, address: Address, branch: str) -> Request:
        local_host, local_port = self._transports[trunk.name].local_address()
        if local_host in ("0.0.0.0", "::"):
            local_host = "127.0.0.1" if address[0].startswith("127.") else advertised_host("")
        scheme = "sips" if trunk.transport.is_tls else "sip"
        target = f"{scheme}:{format_hostport(*address)}"
        if trunk.transport is Transport.TCP:
            target += ";transport=tcp"
        local = format_hostport(local_host, local_port)
        return Request("OPTIONS", target, [
            ("Via", f"{trunk.transport.via_token} {local};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{scheme}:outbound@{local}>;tag={secrets.token_hex(6)}"),
            ("To", f"<{target}>"),
            ("Call-ID", f"{secrets.token_hex(12)}@{local_host}"),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
            ("User-Agent", "outbound trunks check"),
        ])

    def _send(self, probe: _Probe) -> None:
        probe.sent += 1
        self._transports[probe.trunk.name].send(probe.data, probe.trunk.transport, probe.address)

    async def _wait(self, probe: _Probe) -> PingResult:
        deadline = probe.first_sent + self.timeout
        while not probe.done.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                probe.finish(None, "", f"no response in {self.timeout:g} s")
                break
            wait = min(remaining, probe.interval) if probe.trunk.transport is Transport.UDP \
                else remaining
            try:
                await asyncio.wait_for(asyncio.shield(probe.done), wait)
            except TimeoutError:
                if probe.trunk.transport is Transport.UDP and time.monotonic() < deadline:
                    self._send(probe)  # Timer E: T1 doubling up to T2
                    probe.interval = min(probe.interval * 2, T2)
        self._probes.pop(probe.branch, None)
        return probe.done.result()

    def _on_receive(self, data: bytes, source: Address, transport: Transport) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if not isinstance(message, Response) or message.status_code < 200:
            return
        probe = self._probes.get(message.via_branch or "")
        if probe is not None:
            probe.finish(message.status_code, message.reason, None)

    def _on_lost(self, transport: Transport, address: Address) -> None:
        for probe in list(self._probes.values()):
            if probe.trunk.transport is transport and probe.address == address:
                probe.finish(None, "", "connection failed" if transport.is_connection_oriented
                             else "cannot resolve host")


def registrations(trunks: list[TrunkConfig], settings: Settings) -> dict[str, str]:
    """What the workers of each registering trunk last published about its REGISTER binding
    (workers/signaling/registrations.py), read from Redis; empty when no trunk registers."""
    names = [trunk.name for trunk in trunks if trunk.registers]
    if not names:
        return {}
    client: redis.Redis[bytes] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        now = time.time()
        return {name: registration_summary(read_statuses(client, settings, name), now)
                for name in names}
    except redis.RedisError as error:
        return dict.fromkeys(names, f"unknown: Redis unreachable ({error.__class__.__name__})")
    finally:
        client.close()


def format_table(results: list[PingResult], registered: dict[str, str] | None = None) -> str:
    """One row per trunk; a REGISTRATION column when some trunk registers."""
    registered = registered or {}
    rows: list[tuple[str, ...]] = [("TRUNK", "PROXY", "TRANSPORT", "RESULT", "RTT")]
    for r in results:
        if r.reachable:
            outcome = f"reachable: {r.status} {r.reason}"
            if r.sent > 1:
                outcome += f" (after {r.sent - 1} retransmissions)"
            rtt = f"{r.rtt_ms:.1f} ms"
        else:
            outcome, rtt = f"UNREACHABLE: {r.error}", "-"
        rows.append((r.trunk, r.proxy, r.transport, outcome, rtt))
    if registered:
        rows = [(*row, "REGISTRATION" if index == 0 else registered.get(row[0], "-"))
                for index, row in enumerate(rows)]
    last = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(last)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:last])) + "  " + row[last]
        for row in rows
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Inspect the trunks defined in the trunks TOML file."""


@command.command("check", epilog=exit_status_help(
    "every trunk answered", not_done="some trunk did not answer", services=False,
))
@click.option("--trunk", "names", multiple=True, metavar="T",
              help="Check only this trunk (repeatable; default: every trunk in the file).")
@click.option("--trunks", "trunks_file", default=None, metavar="FILE",
              help="Trunks TOML file (default: $OUTBOUND_TRUNKS_FILE).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="S", help="Give up on a trunk after S seconds.")
@click.option("--bind", "bind_host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="Local address to send from.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trunk.")
@reports_errors
def check(
    names: tuple[str, ...], trunks_file: str | None, timeout: float, bind_host: str,
    as_json: bool,
) -> None:
    """Send SIP OPTIONS to each trunk's proxy; print reachability and round-trip time.

    Any final response counts as reachable (a 401/403/404/405 still proves the proxy answers).
    """
    settings = Settings.from_env()
    trunks_config = resolve_trunks(settings, trunks_file)
    trunks = [trunks_config.get(n) for n in names] if names else \
        list(trunks_config.trunks.values())
    try:
        results = asyncio.run(OptionsPinger(bind_host=bind_host, timeout=timeout).ping(trunks))
    except OSError as error:
        raise click.BadParameter(f"cannot send from {bind_host}: {error}",
                                 param_hint="--bind") from None
    registered = registrations(trunks, settings)
    if as_json:
        for result in results:
            extra = {"registration": registered[result.trunk]} if result.trunk in registered \
                else {}
            click.echo(json.dumps({**asdict(result), "reachable": result.reachable, **extra}))
    else:
        click.echo(format_table(results, registered))
    ctx = click.get_current_context()
    ctx.exit(EXIT_ALL_REACHABLE if all(r.reachable for r in results) else EXIT_SOME_UNREACHABLE)
