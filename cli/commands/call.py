"""`outbound call`: place one call, print its events and its CDR, exit 0 only when answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import click

from cli.commands._errors import ConfigFailure
from sipstack.cdr import CdrRecord
from sipstack.config import CoreConfig
from sipstack.dial import Credentials, DialRequest, DialTarget, Scenario
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.events import DialogEstablished, LegEvent
from sipstack.target import parse_hostport, resolve_transport, uri_transport
from sipstack.transport import Address, Transport
from sipstack.uri import SipUri, format_hostport, parse_uri
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

EXIT_ANSWERED = 0
EXIT_NOT_ANSWERED = 1
EXIT_USAGE = 2

CDR_FIELDS = (
    "call_id",
    "correlation_id",
    "scenario",
    "trunk",
    "from_uri",
    "to_uri",
    "started_at",
    "first_provisional_at",
    "answered_at",
    "ended_at",
    "duration_ms",
    "billsec",
    "final_status_code",
    "disposition",
    "hangup_reason",
    "hangup_by",
    "reason_protocol",
    "reason_cause",
    "reason_text",
    "codec",
    "srtp",
    "error",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    target_uri: str
    proxy: Address
    transport: Transport
    bind: Address
    from_user: str
    from_display: str
    credentials: Credentials | None
    ring_timeout: float | None
    cancel_after: float | None
    hold: float
    session_expires: int | None
    srtp: bool
    tls_ca: str | None
    tls_cert: str | None = None  # our TLS listener's certificate chain; None: no TLS listener
    tls_key: str | None = None
    tls_port: int = 0  # the TLS listener's port (0: any free one)
    keepalive_interval: float | None = None


class CallPrinter:
    """Writes events and the CDR as human-readable lines or as JSON lines."""

    def __init__(self, as_json: bool, out: TextIO) -> None:
        self.as_json = as_json
        self.out = out

    def event(self, event: LegEvent) -> None:
        if self.as_json:
            self._json(
                {
                    "type": "event",
                    "state": event.state,
                    "call_id": event.call_id,
                    "status_code": event.status_code,
                }
            )
            return
        parts = [_clock(event.at), f"{event.state:<12}"]
        if event.status_code is not None:
            parts.append(str(event.status_code))
        if event.reason:
            parts.append(event.reason)
        if isinstance(event, DialogEstablished) and event.codec:
            parts.append(f"codec={event.codec}")
        parts.append(f"call-id={event.call_id}")
        self._line(" ".join(parts))

    def cdr(self, cdr: CdrRecord) -> None:
        record = cdr_as_dict(cdr)
        if self.as_json:
            self._json({"type": "cdr", **record})
            return
        reason = ""
        if cdr.reason_protocol:
            reason = f" ({cdr.reason_protocol} cause={cdr.reason_cause} {cdr.reason_text or ''})"
        self._line(
            f"CDR {cdr.disposition}: final={cdr.final_status_code} duration={cdr.duration_ms} ms "
            f"billsec={cdr.billsec} hangup={cdr.hangup_reason} by {cdr.hangup_by}{reason}"
            + (f" codec={cdr.codec}" if cdr.codec else "")
            + (f" error={cdr.error}" if cdr.error else "")
        )

    def note(self, text: str) -> None:
        if not self.as_json:
            self._line(text)

    def _json(self, value: dict[str, Any]) -> None:
        self._line(json.dumps(value, separators=(",", ":")))

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def cdr_as_dict(cdr: CdrRecord) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in CDR_FIELDS:
        value = getattr(cdr, name)
        values[name] = str(value) if hasattr(value, "value") else value
    return values


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


@dataclass(frozen=True, slots=True)
class CallOutcome:
    cdr: CdrRecord | None  # None only if the leg was dropped without a terminal event
    established: bool  # a 2xx was accepted and ACKed (a 2xx with unusable SDP is not)


async def place_call(options: CallOptions, printer: CallPrinter) -> CallOutcome:
    """Dial, follow the leg to its end (CANCEL/BYE as the options ask), return its outcome."""
    loop = asyncio.get_running_loop()
    established = asyncio.Event()
    manager: LegManager

    def on_event(event: LegEvent) -> None:
        printer.event(event)
        if isinstance(event, DialogEstablished):
            established.set()

    core_config = CoreConfig(
        from_user=options.from_user or "outbound",
        from_display_name=options.from_display,
        media_host=options.bind[0],
    )
    transport_config = TransportConfig(
        bind_host=options.bind[0], udp_port=options.bind[1], tls_ca_file=options.tls_ca,
        tls_server_cert_file=options.tls_cert, tls_server_key_file=options.tls_key,
        tls_port=options.tls_port if options.tls_cert else None,
        keepalive_interval=options.keepalive_interval,
    )
    manager = LegManager(core_config, transport_config, ManagerHooks(on_event=on_event))
    await manager.start()
    try:
        request = DialRequest(
            target=DialTarget(
                request_uri=options.target_uri,
                signaling_addr=format_hostport(*options.proxy),
                caller_user=options.from_user,
                caller_display_name=options.from_display,
                transport=options.transport,
            ),
            scenario=Scenario.MANUAL,
            caller_user=options.from_user,
            caller_display_name=options.from_display,
            ring_timeout=options.ring_timeout,
            session_expires=options.session_expires,
            offer_srtp=options.srtp,
            credentials=options.credentials,
        )
        call_id = await manager.dial(request)
        finished = manager.leg_finished(call_id)
        timers: list[asyncio.TimerHandle] = []

        def hang_up() -> None:
            for live in manager.live_legs():
                with contextlib.suppress(LocalProtocolError):
                    manager.hangup(live)

        def cancel_if_unanswered() -> None:
            if not established.is_set():
                for live in manager.live_legs():
                    with contextlib.suppress(LocalProtocolError):
                        manager.send_cancel(live)

        if options.cancel_after is not None:
            timers.append(loop.call_later(options.cancel_after, cancel_if_unanswered))
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, hang_up)
            loop.add_signal_handler(signal.SIGTERM, hang_up)
        established_wait: asyncio.Future[Any] = asyncio.ensure_future(established.wait())
        either: set[asyncio.Future[Any]] = {finished, established_wait}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if established.is_set() and not finished.done():
            timers.append(loop.call_later(options.hold, hang_up))
        terminal = await finished
        established_wait.cancel()
        for timer in timers:
            timer.cancel()
        return CallOutcome(terminal.cdr if terminal is not None else None, established.is_set())
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        await manager.close(timeout=5.0)


def local_host_towards(address: Address) -> str:
    """The local IP the kernel would use to reach `address` (no packet is sent)."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise click.BadParameter(f"cannot resolve {host!r}: {exc}", param_hint="--proxy") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(sockaddr)
        except OSError as exc:
            raise click.BadParameter(
                f"no route to {host}:{port}: {exc}", param_hint="--proxy"
            ) from None
        return str(probe.getsockname()[0])


def _parse_address(text: str, default_port: int, option: str) -> Address:
    if option in ("--bind", "--tls-listen") and text.endswith(":0"):
        text = text[:-2]  # port 0: any free port
    try:
        return parse_hostport(text, default_port)
    except SipParseError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _non_negative(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}")
    return value


def build_options(
    target_uri: str,
    proxy: str,
    transport_name: str | None,
    bind: str | None,
    **rest: Any,
) -> CallOptions:
    """Validate the command line into CallOptions; click.UsageError (exit 2) on bad input."""
    try:
        uri = parse_uri(target_uri)
    except SipParseError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET_URI") from None
    chosen = Transport.parse(transport_name) if transport_name else None
    try:
        # A tel: URI names no host or transport: it goes to --proxy, which routes the number.
        demanded = uri_transport(uri) if isinstance(uri, SipUri) else None
    except SipParseError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET_URI") from None
    if chosen is not None and demanded is not None and demanded is not chosen:
        raise click.UsageError(
            f"--transport {chosen} conflicts with {target_uri!r}, which demands {demanded}"
        )
    try:
        transport = resolve_transport(
            DialTarget(request_uri=target_uri, signaling_addr=proxy, transport=chosen)
        )
    except SipParseError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET_URI") from None
    proxy_address = _parse_address(proxy, transport.default_port, "--proxy")
    bind_address = (
        _parse_address(bind, 0, "--bind") if bind else (local_host_towards(proxy_address), 0)
    )
    auth_user, auth_password = rest.pop("auth_user"), rest.pop("auth_password")
    if (auth_user is None) != (auth_password is None):
        raise click.UsageError("--auth-user and --auth-password go together")
    credentials = Credentials(username=auth_user, password=auth_password) if auth_user else None
    tls_listen = rest.pop("tls_listen")
    if tls_listen is not None:
        if rest.get("tls_cert") is None:
            raise click.UsageError("--tls-listen needs --tls-cert (the listener's certificate)")
        listen_host, rest["tls_port"] = _parse_address(tls_listen, 0, "--tls-listen")
        if listen_host != bind_address[0]:
            raise click.BadParameter(
                f"host {listen_host!r} is not the --bind host {bind_address[0]!r}: every "
                "socket binds to the one host", param_hint="--tls-listen",
            )
    if rest.get("tls_key") is not None and rest.get("tls_cert") is None:
        raise click.UsageError("--tls-key needs --tls-cert")
    return CallOptions(
        target_uri=target_uri,
        proxy=proxy_address,
        transport=transport,
        bind=bind_address,
        credentials=credentials,
        **rest,
    )


@click.command(name="call")
@click.argument("target_uri")
@click.option("--proxy", required=True, metavar="HOST:PORT", help="First hop for the INVITE.")
@click.option(
    "--transport",
    "transport_name",
    type=click.Choice(["udp", "tcp", "tls"]),
    default=None,
    help="Transport (default: from the URI, else udp).",
)
@click.option("--bind", metavar="HOST:PORT", help="Local address (default: towards the proxy).")
@click.option("--from-user", default="", help="User part of our From URI.")
@click.option("--from-display", default="", help="Display name of our From header.")
@click.option("--auth-user", default=None, help="Digest user name for 401/407 challenges.")
@click.option("--auth-password", default=None, help="Digest password.")
@click.option(
    "--ring-timeout",
    type=float,
    callback=_non_negative,
    help="Give up after S s without an answer (CANCEL; recorded as no_answer).",
)
@click.option(
    "--cancel-after",
    type=float,
    callback=_non_negative,
    help="Hang up as the caller S s after dialling if unanswered (CANCEL; cancelled).",
)
@click.option(
    "--hold", type=float, default=0.0, callback=_non_negative, help="BYE S s after answer."
)
@click.option("--session-expires", type=click.IntRange(min=90), help="RFC 4028 interval to offer.")
@click.option("--srtp", is_flag=True, help="Offer SRTP (SDES a=crypto).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA file for TLS.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Certificate chain (PEM) of our TLS listener: a sips: Contact then names an "
                   "address that answers TLS (default port: any free one).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="Private key of --tls-cert (default: in the certificate file).")
@click.option("--tls-listen", metavar="HOST:PORT",
              help="Address of our TLS listener (HOST is the --bind host; needs --tls-cert). "
                   "Without a listener a far end reaches us over TLS only on our own "
                   "connection (Via ;alias, RFC 5923).")
@click.option("--keepalive-interval", type=click.FloatRange(min=0, min_open=True),
              help="Send CRLF keep-alives (RFC 5626) on TCP/TLS connections quiet for S s.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def command(
    target_uri: str,
    proxy: str,
    transport_name: str | None,
    bind: str | None,
    as_json: bool,
    **rest: Any,
) -> None:
    """Place one call to TARGET_URI (sip:, sips: or tel:) and follow it to the end.

    After the answer the call is hung up after --hold seconds unless the far end hangs up
    first. Exit status: 0 answered (the call was established), 1 not answered, 2 usage error.
    """
    options = build_options(target_uri, proxy, transport_name, bind, **rest)
    printer = CallPrinter(as_json, sys.stdout)
    try:
        outcome = asyncio.run(place_call(options, printer))
    except OSError as exc:  # one line, no usage text: the flag and what could not be bound
        raise ConfigFailure(f"--bind {format_hostport(*options.bind)}: {exc.strerror or exc}"
                            ) from None
    except (LocalProtocolError, SipParseError) as exc:
        raise click.UsageError(str(exc)) from None
    if outcome.cdr is None:
        printer.note("the call was dropped without a CDR")
    else:
        printer.cdr(outcome.cdr)
    sys.exit(EXIT_ANSWERED if outcome.established else EXIT_NOT_ANSWERED)
