"""`outbound carrier`: run the carrier simulator, a SIP far end that answers, rejects and rings."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass

import click

from carrier.auth import DigestAuthenticator
from carrier.config import CarrierConfig, Outcome
from carrier.shell import CarrierServer, format_summary, run_carrier
from carrier.state import CarrierStats
from cli.commands._errors import exit_status_help, reports_errors
from sipstack.config import TimerConfig
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.reason import parse_reason_header
from sipstack.target import parse_hostport
from sipstack.transport import Address, Transport
from workers.observability.log_format import LOG_FORMATS, configure_logging

DEFAULT_LISTEN = "127.0.0.1:5080"
TRANSPORT_CHOICES = {"udp": (Transport.UDP,), "tcp": (Transport.TCP,),
                     "both": (Transport.UDP, Transport.TCP)}

log = logging.getLogger("outbound.carrier")


@dataclass(frozen=True, slots=True)
class CarrierOptions:
    listen: Address
    transports: tuple[Transport, ...]
    config: CarrierConfig
    advertise: str | None
    seed: int | None
    metrics_port: int | None
    stats_interval: float


def outcome_weights(
    answer: float | None, busy: float, no_answer: float, reject: float
) -> dict[Outcome, float]:
    """The four weights; an omitted --answer takes what the others leave of 1 (at least 0)."""
    others = {Outcome.BUSY: busy, Outcome.NO_ANSWER: no_answer, Outcome.REJECT: reject}
    for outcome, value in others.items():
        if value < 0:
            raise click.BadParameter(f"must be >= 0, got {value}",
                                     param_hint=f"--{outcome.value.replace('_', '-')}")
    if answer is None:
        answer = max(0.0, 1.0 - sum(others.values()))
    elif answer < 0:
        raise click.BadParameter(f"must be >= 0, got {answer}", param_hint="--answer")
    weights = {Outcome.ANSWER: answer, **others}
    if sum(weights.values()) <= 0:
        raise click.UsageError("--answer, --busy, --no-answer and --reject are all 0")
    return weights


def _check_reason(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        values = parse_reason_header(text)
    except (SipParseError, LocalProtocolError) as exc:
        raise click.BadParameter(str(exc), param_hint="--remote-hangup-reason") from None
    if not values:
        raise click.BadParameter("no reason-value in it", param_hint="--remote-hangup-reason")
    return text


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog=exit_status_help("stopped by Ctrl-C or SIGTERM (the summary is printed)",
                                       services=False))
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              envvar="OUTBOUND_CARRIER_LISTEN", help="Address to listen on (UDP and TCP).")
@click.option("--transport", "transport_name", type=click.Choice(sorted(TRANSPORT_CHOICES)),
              default="both", show_default=True, help="Which transports to listen on.")
@click.option("--advertise", metavar="HOST", default=None,
              help="Host for Via/Contact (default: the listen host; the machine's address for "
                   "0.0.0.0).")
@click.option("--answer", type=float, default=None, metavar="P",
              help="Weight of answered calls (default: 1 minus the other weights).")
@click.option("--busy", type=float, default=0.0, show_default=True, metavar="P",
              help="Weight of 486 Busy Here.")
@click.option("--no-answer", type=float, default=0.0, show_default=True, metavar="P",
              help="Weight of calls that ring until the caller CANCELs.")
@click.option("--reject", type=float, default=0.0, show_default=True, metavar="P",
              help="Weight of 603 Decline.")
@click.option("--ring", type=click.FloatRange(min=0), default=1.0, show_default=True,
              metavar="S", help="Seconds of 180 Ringing before the final response.")
@click.option("--hold", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Seconds after the ACK before we send BYE (default: wait for the caller).")
@click.option("--remote-hangup-reason", default=None, metavar="REASON",
              help="Reason header of our BYE, e.g. 'Q.850;cause=16;text=\"Normal call "
                   "clearing\"'.")
@click.option("--challenge", is_flag=True, help="Answer each new INVITE with a digest 401 first.")
@click.option("--realm", default="carrier.invalid", show_default=True)
@click.option("--username", default="outbound", show_default=True,
              help="User name the digest answer must carry.")
@click.option("--password", default="carrier", show_default=True,
              envvar="OUTBOUND_CARRIER_PASSWORD", help="Digest password (env too).")
@click.option("--session-expires", type=click.IntRange(min=90), default=None, metavar="S",
              help="Put Session-Expires: S;refresher=uac in the 200 and end calls not refreshed.")
@click.option("--max-ring", type=click.FloatRange(min=0, min_open=True), default=180.0,
              show_default=True, metavar="S",
              help="A no-answer call nobody CANCELs gets 480 after this.")
@click.option("--t1", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, metavar="S", help="RFC 3261 T1 (retransmission base).")
@click.option("--seed", type=int, default=None, help="Seed the outcome draw (repeatable runs).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              envvar="OUTBOUND_METRICS_PORT", help="Serve Prometheus /metrics on this port.")
@click.option("--stats-interval", type=click.FloatRange(min=0), default=0.0, metavar="S",
              help="Log the counters every S seconds (0: only at exit).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              envvar="OUTBOUND_LOG_FORMAT")
@click.option("--log-level", default="INFO", show_default=True, envvar="OUTBOUND_LOG_LEVEL")
@reports_errors
def command(
    listen: str, transport_name: str, advertise: str | None, answer: float | None, busy: float,
    no_answer: float, reject: float, ring: float, hold: float | None,
    remote_hangup_reason: str | None, challenge: bool, realm: str, username: str, password: str,
    session_expires: int | None, max_ring: float, t1: float, seed: int | None,
    metrics_port: int | None, stats_interval: float, log_format: str, log_level: str,
) -> None:
    """Run a SIP far end that answers, rejects and rings calls by the given weights.

    Prints the calls by outcome when stopped (Ctrl-C or SIGTERM).
    """
    try:
        address = parse_hostport(listen, 5080)
    except SipParseError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    try:
        config = CarrierConfig(
            weights=outcome_weights(answer, busy, no_answer, reject),
            ring=ring,
            hold=hold,
            remote_hangup_reason=_check_reason(remote_hangup_reason),
            challenge=challenge,
            realm=realm,
            username=username,
            password=password,
            session_expires=session_expires,
            max_ring=max_ring,
            timers=TimerConfig(t1=t1, t2=max(4.0, t1)),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(log_format, log_level)
    options = CarrierOptions(
        listen=address, transports=TRANSPORT_CHOICES[transport_name], config=config,
        advertise=advertise, seed=seed, metrics_port=metrics_port, stats_interval=stats_interval,
    )
    started = time.monotonic()
    try:
        stats = asyncio.run(_serve(options))
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {listen}: {exc}") from None
    click.echo(format_summary(stats, time.monotonic() - started))


async def _serve(options: CarrierOptions) -> CarrierStats:
    config = options.config
    authenticator = None
    if config.challenge:
        authenticator = DigestAuthenticator(
            realm=config.realm, username=config.username, password=config.password
        )
    reporter: asyncio.Task[None] | None = None

    def ready(server: CarrierServer) -> None:
        nonlocal reporter
        transports = "+".join(t.value for t in sorted(server.transports))
        log.info("carrier listening on %s:%d (%s), advertising %s:%d", server.host, server.port,
                 transports, *server.core.config.local_address,
                 extra={"listen_port": server.port})
        if options.metrics_port is not None:
            from carrier.metrics import carrier_registry
            from workers.observability.metrics import start_metrics_server

            # Metrics are served where SIP is: a loopback carrier stays on loopback.
            exporter = start_metrics_server(options.metrics_port, carrier_registry(server.core),
                                            host=server.host or "0.0.0.0")
            log.info("metrics on :%d/metrics", exporter.port)
        if options.stats_interval > 0:
            reporter = asyncio.create_task(_report(server, options.stats_interval))
        sys.stdout.flush()

    try:
        return await run_carrier(
            config, options.listen[0], options.listen[1], transports=options.transports,
            advertise=options.advertise, authenticator=authenticator, seed=options.seed,
            on_ready=ready,
        )
    finally:
        if reporter is not None:
            reporter.cancel()


async def _report(server: CarrierServer, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        counts = server.core.stats.outcomes()
        log.info("active=%d %s", server.core.active_calls,
                 " ".join(f"{k}={v}" for k, v in counts.items() if v))
