"""The trunks TOML file: one pydantic model per `[trunks.NAME]` table (`TrunkConfig`, unknown
keys refused), `[defaults]` merged under each; errors name the file, the key and the reason.

The file's format is described in workers.config.settings.

Over 500 lines: this is the one definition of every trunk key (type, default and check, ~60
keys), with each key's small value check beside the model that uses it.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from models.dial_fields import DialFields, InvalidDialRequest
from sipstack.config import TimerConfig
from sipstack.dial import Credentials, DialRequest
from sipstack.errors import SipParseError
from sipstack.outcome import DEFAULT_FINAL_AT_CALLEE, OutcomeRules
from sipstack.sdp import DEFAULT_CODECS, Codec
from sipstack.target import parse_hostport
from sipstack.transport import Address, Transport
from sipstack.uri import format_host, parse_host, parse_uri
from workers.config.errors import ConfigError
from workers.contract.dial_message import is_uri, phone_number
from workers.routing.groups import TrunkGroup, parse_groups

if TYPE_CHECKING:
    from workers.signaling.transports import TransportConfig

T = TypeVar("T")
TIMER_B = TimerConfig().timer_b  # 64 * T1: an attempt that waits longer has already failed


class _KeyProblem(ValueError):
    """A value refused; `key` (dotted, below the field) when the problem is deeper in it."""

    def __init__(self, reason: str, key: str = "") -> None:
        super().__init__(reason)
        self.key = key


# --- value checks (each is a field's whole validation: TOML values are checked as they are) --


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _KeyProblem(f"must be a string, got {type(value).__name__}")
    if any(ch in value for ch in "\r\n\0"):
        raise _KeyProblem("must not contain line breaks or NUL")
    return value.strip()


def _required_text(value: Any) -> str:
    text = _text(value)
    if not text:
        raise _KeyProblem("must not be empty")
    return text


def _number(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _KeyProblem(f"must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or value < minimum:
            raise _KeyProblem(f"must be a number >= {minimum:g}, got {value!r}")
        return float(value)

    return check


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _KeyProblem(f"must be an integer, got {type(value).__name__}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise _KeyProblem(f"must be an integer {bound}, got {value}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _KeyProblem(f"must be true or false, got {type(value).__name__}")
    return value


def _fraction(*, one_allowed: bool) -> Callable[[Any], float]:
    """A share: above 0 and below 1 (or up to 1 with `one_allowed`)."""

    def check(value: Any) -> float:
        number = _number(0.0)(value)
        if number <= 0 or number > 1 or (number == 1 and not one_allowed):
            bound = "at most 1" if one_allowed else "below 1"
            raise _KeyProblem(f"must be above 0 and {bound}, got {value!r}")
        return number

    return check


def _keepalive(value: Any) -> float | None:
    return _number(0.0)(value) or None


def _words(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise _KeyProblem("must be a list of non-empty strings")
    return tuple(item.strip() for item in value)


def _sip(parse: Callable[[], T]) -> T:
    """Run a sipstack parser; its SipParseError becomes the key's problem."""
    try:
        return parse()
    except SipParseError as exc:
        raise _KeyProblem(str(exc)) from None


def _transport(value: Any) -> Transport:
    if isinstance(value, Transport):
        return value
    try:
        return Transport.parse(_text(value))
    except ValueError as exc:
        raise _KeyProblem(str(exc)) from None


def _proxy(value: Any) -> str:
    proxy = _required_text(value)
    if proxy.count(":") > 1 and not proxy.startswith("["):
        # "::1:5060" is itself an IPv6 address: only brackets say where the port begins.
        raise _KeyProblem(f"{proxy!r}: write an IPv6 address as [addr]:port")
    _sip(lambda: parse_hostport(proxy, 5060))
    return proxy


def _domain(value: Any) -> str:
    domain = _text(value)  # kept without IPv6 brackets, as a host is everywhere else
    return _sip(lambda: parse_host(domain, "host")) if domain else ""


def _asserted_identity(value: Any) -> str:
    identity = _text(value)
    if identity:
        _sip(lambda: parse_uri(identity))
    return identity


def _session_expires(value: Any) -> int | None:
    seconds = _integer(0)(value)
    if 0 < seconds < 90:
        raise _KeyProblem(
            f"{seconds} is below the RFC 4028 minimum of 90 s (0 disables the session timer)"
        )
    return seconds or None


_CODECS_BY_NAME = {codec.name.lower(): codec for codec in DEFAULT_CODECS}


def _codecs(value: Any) -> tuple[Codec, ...]:
    codecs: list[Codec] = []
    for name in _words(value):
        codec = _CODECS_BY_NAME.get(name.lower())
        if codec is None:
            known = ", ".join(c.name for c in DEFAULT_CODECS)
            raise _KeyProblem(f"unknown codec {name!r} (known: {known})")
        if codec not in codecs:
            codecs.append(codec)
    if codecs and all(c.name == "telephone-event" for c in codecs):
        raise _KeyProblem("needs at least one audio codec besides telephone-event")
    return tuple(codecs)


def _credentials(value: Any) -> Credentials | None:
    if value is None or isinstance(value, Credentials):
        return value
    if not isinstance(value, dict):
        raise _KeyProblem("must be a table with username and password")
    unknown = sorted(set(value) - {"username", "password", "realm"})
    if unknown:
        raise _KeyProblem("unknown key", unknown[0])
    for key in ("username", "password"):
        if key not in value:
            raise _KeyProblem("missing (required)", key)

    def read(key: str, check: Callable[[Any], str]) -> str:
        try:
            return check(value[key]) if key in value else ""
        except _KeyProblem as problem:
            raise _KeyProblem(str(problem), key) from None

    password = value["password"]
    if not isinstance(password, str) or any(ch in password for ch in "\r\n\0"):
        read("password", _text)  # raises with the reason
    return Credentials(
        username=read("username", _required_text), password=password,
        realm=read("realm", _text) or None,
    )


def _path(value: Any, info: ValidationInfo) -> str | None:
    """A file name (None when empty); relative ones are taken from the trunks file's folder."""
    if value is None:
        return None
    text = _text(value)
    if not text:
        return None
    path = Path(text).expanduser()
    base_dir = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return str(path)


PRACK_MODES = ("off", "when_required", "supported", "required")


class PrackOptions(TypedDict):
    """The CoreConfig fields a trunk's `prack` mode sets."""

    prack: bool
    require_100rel: bool
    retry_421: bool

STIR_ATTESTATIONS = ("A", "B", "C")


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _text(value)
        if text not in choices:
            raise _KeyProblem(f"must be one of {', '.join(map(repr, choices))}, got {text!r}")
        return text

    return check


def _sip_uri_text(value: Any) -> str:
    text = _text(value)
    if text and not text.lower().startswith(("sip:", "sips:")):
        raise _KeyProblem(f"{text!r} is not a sip: or sips: URI")
    if text:
        _sip(lambda: parse_uri(text))
    return text


def _https_url(value: Any) -> str:
    text = _text(value)
    if text and (not text.startswith("https://") or any(c in text for c in '<>"; \t')):
        raise _KeyProblem(f"{text!r} is not an https:// URL")
    return text


def _register_expires(value: Any) -> int:
    return _integer(10, 2**32 - 1)(value)


def _final_codes(value: Any) -> frozenset[int]:
    if isinstance(value, frozenset):
        return value
    if not isinstance(value, list | tuple):
        raise _KeyProblem("must be a list of status codes (300-699)")
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int) or not 300 <= code <= 699:
            raise _KeyProblem(f"{code!r} is not a final failure status code (300-699)")
    return frozenset(value)


def _failover_timeout(value: Any) -> float:
    seconds = _number(0.05)(value)
    if seconds >= TIMER_B:
        raise _KeyProblem(f"must be shorter than Timer B ({TIMER_B:g} s), got {seconds:g}")
    return seconds


Number = Annotated[float, PlainValidator(_number(0.001))]
FileName = Annotated[str | None, PlainValidator(_path)]
Text = Annotated[str, PlainValidator(_text)]


class TrunkConfig(BaseModel):
    """One `[trunks.NAME]` table: where to send INVITEs and how this trunk may be used."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    proxy: Annotated[str, PlainValidator(_proxy)]
    transport: Annotated[Transport, PlainValidator(_transport)] = Transport.UDP
    cps: Number = 10.0
    max_concurrent: Annotated[int, PlainValidator(_integer(1))] = 100
    # host of Request-URIs built from bare numbers; empty: the proxy host
    domain: Annotated[str, PlainValidator(_domain)] = ""
    caller_user: Text = ""
    caller_display_name: Text = ""
    asserted_identity: Annotated[str, PlainValidator(_asserted_identity)] = ""
    asserted_identity_display_name: Text = ""
    privacy: Annotated[tuple[str, ...], PlainValidator(_words)] = ()
    credentials: Annotated[Credentials | None, PlainValidator(_credentials)] = None
    codecs: Annotated[tuple[Codec, ...], PlainValidator(_codecs)] = ()
    srtp: Annotated[bool, PlainValidator(_boolean)] = False
    session_expires: Annotated[int | None, PlainValidator(_session_expires)] = None
    ring_timeout: Number = 60.0
    max_call_duration: Number = 3600.0
    rtp_port: Annotated[int, PlainValidator(_integer(0, 65535))] = 0
    tls_ca_file: FileName = None  # None: the system store
    tls_cert_file: FileName = None  # our TLS listener's chain (and client cert if asked)
    tls_key_file: FileName = None  # None: the key is in tls_cert_file
    # CRLF pings on quiet TCP/TLS connections (RFC 5626 §3.5.1); 0 or absent: off
    keepalive_interval: Annotated[float | None, PlainValidator(_keepalive)] = None
    udp_only: Annotated[bool, PlainValidator(_boolean)] = False  # big requests stay on UDP
    # Outcomes and trunk-group failover (sipstack.outcome, docs/routing.md)
    busy_from_proxy: Annotated[bool, PlainValidator(_boolean)] = False
    # RFC 3263 location of `proxy` (a domain name) and failover between its targets
    locate: Annotated[bool, PlainValidator(_boolean)] = False
    failover_timeout: Annotated[float, PlainValidator(_failover_timeout)] = 8.0
    final_codes: Annotated[frozenset[int], PlainValidator(_final_codes)] = (
        DEFAULT_FINAL_AT_CALLEE)
    # carrier back-pressure (workers.coordination.backpressure): 503/429 with Retry-After
    backpressure: Annotated[bool, PlainValidator(_boolean)] = True
    backpressure_decrease: Annotated[float, PlainValidator(_fraction(one_allowed=False))] = 0.5
    backpressure_increase: Annotated[float, PlainValidator(_fraction(one_allowed=True))] = 0.1
    backpressure_interval: Number = 5.0
    backpressure_min_factor: Annotated[float, PlainValidator(_fraction(one_allowed=True))] = 0.05
    backpressure_max_hold: Number = 300.0
    backpressure_guard: Annotated[float, PlainValidator(_number(0.0))] = 1.0
    # OPTIONS health checks (workers.coordination.health); off unless asked for: a far end
    # that only expects INVITEs may count an OPTIONS as a failed call
    health_check: Annotated[bool, PlainValidator(_boolean)] = False
    health_interval: Number = 30.0
    health_timeout: Number = 5.0
    health_down_after: Annotated[int, PlainValidator(_integer(1))] = 3
    health_up_after: Annotated[int, PlainValidator(_integer(1))] = 2
    health_stale_after: Number = 300.0
    # RFC 3262: "when_required" offers nothing but answers a 421 asking for 100rel once
    prack: Annotated[str, PlainValidator(_choice(PRACK_MODES))] = "when_required"
    # REGISTER (RFC 3261 §10) with the trunk's credentials; the dials wait on its result
    # the TOML key is `register` (a pydantic BaseModel attribute of that name exists)
    registers: Annotated[bool, PlainValidator(_boolean)] = Field(
        default=False, validation_alias="register")
    register_expires: Annotated[int, PlainValidator(_register_expires)] = 3600
    register_aor: Annotated[str, PlainValidator(_sip_uri_text)] = ""  # empty: user@domain
    register_contact: Annotated[str, PlainValidator(_sip_uri_text)] = ""  # empty: the listener
    # STIR/SHAKEN (RFC 8224/8225/8588): sign every INVITE with this P-256 key
    stir_key_file: FileName = None
    stir_cert_file: FileName = None  # its certificate, checked against the key at start
    stir_x5u: Annotated[str, PlainValidator(_https_url)] = ""  # where the certificate is
    stir_attest: Annotated[str, PlainValidator(_choice(("", *STIR_ATTESTATIONS)))] = ""

    @model_validator(mode="after")
    def _key_needs_its_certificate(self) -> TrunkConfig:
        if self.tls_key_file and not self.tls_cert_file:
            raise _KeyProblem("given without tls_cert_file", "tls_key_file")
        if self.health_stale_after <= self.health_interval + self.health_timeout:
            # the shared verdict would lapse between two rounds of pings
            raise _KeyProblem(
                f"must be above health_interval + health_timeout "
                f"({self.health_interval + self.health_timeout:g} s), got "
                f"{self.health_stale_after:g}", "health_stale_after")
        if self.stir_key_file:
            for key in ("stir_x5u", "stir_attest"):
                if not getattr(self, key):
                    raise _KeyProblem("required with stir_key_file", key)
        else:
            for key in ("stir_cert_file", "stir_x5u", "stir_attest"):
                if getattr(self, key):
                    raise _KeyProblem("given without stir_key_file", key)
        return self

    @property
    def outcome_rules(self) -> OutcomeRules:
        return OutcomeRules(busy_from_proxy=self.busy_from_proxy, final_codes=self.final_codes)

    def transport_config(self, bind_host: str, udp_port: int) -> TransportConfig:
        """The worker's sockets for this trunk: UDP on `udp_port`, TCP beside it, and a TLS
        listener (the port after, or any free one with `udp_port` 0) when the trunk has a
        certificate, so a `sips:` Contact names an address that answers TLS."""
        from workers.signaling.transports import TransportConfig

        return TransportConfig(
            bind_host=bind_host, udp_port=udp_port, tls_ca_file=self.tls_ca_file,
            tls_cert_file=self.tls_cert_file, tls_key_file=self.tls_key_file,
            tls_server_cert_file=self.tls_cert_file, tls_server_key_file=self.tls_key_file,
            keepalive_interval=self.keepalive_interval,
        )

    def prack_options(self) -> PrackOptions:
        """CoreConfig's 100rel fields for this trunk's `prack` mode."""
        return {
            "prack": self.prack in ("supported", "required"),
            "require_100rel": self.prack == "required",
            "retry_421": self.prack != "off",
        }

    @property
    def proxy_address(self) -> Address:
        """(host, port) of the proxy; the transport's default port when the file gives none."""
        return parse_hostport(self.proxy, self.transport.default_port)

    def request_uri(self, to: str) -> str:
        """`to` as a Request-URI: a sip:/sips:/tel: URI stays (checked when the request is
        validated), a phone number goes to the trunk's domain; InvalidDialRequest otherwise."""
        text = to.strip()
        if not text:
            raise InvalidDialRequest({"to": "empty destination"})
        if is_uri(text):
            return text
        number = phone_number(text)
        if number is None:
            raise InvalidDialRequest({
                "to": f"{text[:80]!r} is neither a sip:, sips: or tel: URI nor a phone number "
                      "(digits, an optional leading '+')"
            })
        scheme = "sips" if self.transport is Transport.TLS else "sip"
        host = format_host(self.domain or self.proxy_address[0])
        return f"{scheme}:{number}@{host}"

    def build_request(self, fields: DialFields) -> DialRequest:
        """The DialRequest for a stored request: the request's own values, the trunk's
        defaults where it left them out; the trunk's max call duration is a ceiling."""
        request = fields.to_dial_request(signaling_addr=self.proxy, credentials=self.credentials)
        target = request.target
        caller_user = request.caller_user or self.caller_user
        caller_display = request.caller_display_name or self.caller_display_name
        max_duration = self.max_call_duration
        if request.max_duration is not None:
            max_duration = min(request.max_duration, self.max_call_duration)
        return replace(
            request,
            target=replace(
                target,
                caller_user=target.caller_user or caller_user,
                caller_display_name=target.caller_display_name or caller_display,
                transport=target.transport if fields.signaling_addr else (
                    target.transport or self.transport
                ),
            ),
            trunk=self.name,
            caller_user=caller_user,
            caller_display_name=caller_display,
            asserted_identity_uri=request.asserted_identity_uri or self.asserted_identity,
            asserted_identity_display_name=(
                request.asserted_identity_display_name or self.asserted_identity_display_name
            ),
            privacy_tokens=request.privacy_tokens or self.privacy,
            rtp_port=request.rtp_port or self.rtp_port,
            codecs=request.codecs or self.codecs,
            offer_srtp=request.offer_srtp or self.srtp,
            ring_timeout=request.ring_timeout or self.ring_timeout,
            max_duration=max_duration,
            session_expires=request.session_expires or self.session_expires,
        )






@dataclass(frozen=True, slots=True)
class TrunksFile:
    path: str
    trunks: Mapping[str, TrunkConfig] = field(default_factory=dict)
    groups: Mapping[str, TrunkGroup] = field(default_factory=dict)  # [groups.NAME]

    def get(self, name: str) -> TrunkConfig:
        trunk = self.trunks.get(name)
        if trunk is None:
            known = ", ".join(sorted(self.trunks)) or "none"
            raise ConfigError(f"{self.path}: no [trunks.{name}] table (trunks defined: {known})")
        return trunk


def load_trunks(path: str | os.PathLike[str]) -> TrunksFile:
    """Read and check a trunks TOML file; ConfigError names the file, the key and the reason."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read trunks file: {exc.strerror or exc}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_trunks(document, source=str(file), base_dir=file.parent)


def parse_trunks(
    document: Mapping[str, Any], *, source: str = "<trunks>", base_dir: Path | None = None
) -> TrunksFile:
    """Check a parsed trunks document; relative TLS paths are taken from `base_dir`."""
    unknown_top = set(document) - {"trunks", "defaults", "groups"}
    if unknown_top:
        raise ConfigError(f"{source}: {sorted(unknown_top)[0]}: unknown table "
                          "(use [trunks.NAME] or [groups.NAME])")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults: must be a table")
    tables = document.get("trunks")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{source}: trunks: no [trunks.NAME] table defined")
    trunks: dict[str, TrunkConfig] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: trunks.{name}: must be a table")
        if not _is_trunk_name(name):
            raise ConfigError(
                f"{source}: trunks.{name}: trunk names use letters, digits, '-', '_' and '.'"
            )
        merged = {**defaults, **table}
        if isinstance(defaults.get("credentials"), dict) and isinstance(
            table.get("credentials"), dict
        ):
            merged["credentials"] = {**defaults["credentials"], **table["credentials"]}
        trunks[name] = _parse_trunk(name, merged, f"{source}: trunks.{name}", base_dir)
    groups = parse_groups(document.get("groups", {}), known_trunks=trunks,
                          where=f"{source}: groups")
    return TrunksFile(path=source, trunks=trunks, groups=groups)


def _parse_trunk(
    name: str, table: Mapping[str, Any], where: str, base_dir: Path | None
) -> TrunkConfig:
    if "name" in table:  # the table's name is its key, not a setting
        raise ConfigError(f"{where}.name: unknown key")
    try:
        return TrunkConfig.model_validate({**table, "name": name},
                                          context={"base_dir": base_dir})
    except ValidationError as error:
        raise ConfigError(_first_problem(error, where)) from None


def _first_problem(error: ValidationError, where: str) -> str:
    """The message of one refused key: an unknown key first, then the first other problem."""
    problems = error.errors()
    unknown = [problem for problem in problems if problem["type"] == "extra_forbidden"]
    problem = min(unknown, key=lambda p: str(p["loc"])) if unknown else problems[0]
    keys = [str(part) for part in problem["loc"]]
    if problem["type"] == "extra_forbidden":
        reason = "unknown key"
    elif problem["type"] == "missing":
        reason = "missing (required)"
    else:
        cause = (problem.get("ctx") or {}).get("error")
        if isinstance(cause, _KeyProblem):
            keys += [cause.key] if cause.key else []
            reason = str(cause)
        else:
            reason = problem["msg"]
    return f"{where}.{'.'.join(keys)}: {reason}" if keys else f"{where}: {reason}"


def _is_trunk_name(name: str) -> bool:
    return bool(name) and all(ch.isalnum() or ch in "-_." for ch in name)


def with_overrides(trunk: TrunkConfig, **changes: Any) -> TrunkConfig:
    """A copy of a trunk with some fields changed (CLI flags, tests); not validated again."""
    return trunk.model_copy(update=changes)
