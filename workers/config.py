"""Worker settings (flags > environment `OUTBOUND_*` > defaults) and the trunks TOML file.

A trunks file (`--trunks FILE` or `OUTBOUND_TRUNKS_FILE`) has one table per trunk; `[defaults]`
applies to every trunk:

    [defaults]
    ring_timeout = 45            # seconds until an unanswered INVITE is CANCELled
    max_call_duration = 3600     # seconds after answer until we BYE (a request may ask less)

    [trunks.carrier-a]
    proxy = "10.0.0.5:5060"      # host:port or [v6]:port of the carrier's SBC
    transport = "udp"            # udp, tcp or tls
    cps = 10                     # new calls per second, shared by every worker of the trunk
    max_concurrent = 100         # live legs, shared by every worker of the trunk
    domain = "carrier.example"   # host of Request-URIs built from bare numbers
    caller_user = "+15550100"    # default caller (From user), display name too:
    caller_display_name = "ACME"
    asserted_identity = "sip:+15550100@acme.example"   # P-Asserted-Identity, optional
    privacy = ["id"]
    codecs = ["PCMA", "PCMU", "telephone-event"]      # default: all known codecs
    srtp = false                 # offer SDES-SRTP
    session_expires = 1800       # RFC 4028 interval to offer (0: none)
    rtp_port = 0                 # port advertised in the SDP offer (0: the core default)
    [trunks.carrier-a.credentials]                      # digest, optional
    username = "acme"
    password = "secret"
    realm = "carrier.example"    # optional: answer any realm

A wrong file is refused at start with the file, the key and the reason.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.dial_fields import DialFields
from sipstack.dial import Credentials, DialRequest
from sipstack.sdp import DEFAULT_CODECS, Codec
from sipstack.transport import Transport

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbound"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A setting or the trunks file is wrong; the message names the key and the reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Process-wide settings of workers, clients and the CLI."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = DEFAULT_REDIS_URL
    trunks_file: str | None = None
    # Every Redis key we own starts with this (streams, limits, heartbeats), so tests and
    # several deployments can share one Redis.
    key_prefix: str = "outbound"
    events_maxlen: int = 100_000
    heartbeat_ttl: float = 15.0
    drain_timeout: float = 30.0
    # Unacknowledged broker messages come back after this; a redelivered dial is harmless (the
    # claim is atomic), so it can be short enough for a dead worker's prefetched dials.
    visibility_timeout: float = 300.0
    control_expires: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `OUTBOUND_*`; keyword overrides (from flags) win when not None."""
        source = os.environ if env is None else env
        redis_url = source.get("OUTBOUND_REDIS_URL") or DEFAULT_REDIS_URL
        values: dict[str, Any] = {
            "database_url": source.get("OUTBOUND_DATABASE_URL") or DEFAULT_DATABASE_URL,
            "redis_url": redis_url,
            "broker_url": source.get("OUTBOUND_BROKER_URL") or redis_url,
            "trunks_file": source.get("OUTBOUND_TRUNKS_FILE") or None,
            "key_prefix": source.get("OUTBOUND_KEY_PREFIX") or "outbound",
        }
        numeric = {
            "events_maxlen": ("OUTBOUND_EVENTS_MAXLEN", int),
            "heartbeat_ttl": ("OUTBOUND_HEARTBEAT_TTL", float),
            "drain_timeout": ("OUTBOUND_DRAIN_TIMEOUT", float),
            "visibility_timeout": ("OUTBOUND_VISIBILITY_TIMEOUT", float),
            "control_expires": ("OUTBOUND_CONTROL_EXPIRES", float),
        }
        for name, (variable, kind) in numeric.items():
            raw = source.get(variable)
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{variable}={raw!r}: not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        positive = ("events_maxlen", "heartbeat_ttl", "drain_timeout", "visibility_timeout",
                    "control_expires")
        for name in positive:
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise ConfigError(f"{name}: must be a positive number, got {value!r}")
        if not self.key_prefix or any(ch.isspace() for ch in self.key_prefix):
            raise ConfigError(f"key_prefix: must be non-empty without spaces: {self.key_prefix!r}")

    def key(self, *parts: str) -> str:
        """A Redis key under our prefix: key('events', 'T') -> 'outbound:events:T'."""
        return ":".join((self.key_prefix, *parts))

    def events_stream(self, trunk: str) -> str:
        return self.key("events", trunk)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkConfig:
    """One `[trunks.NAME]` table: where to send INVITEs and how this trunk may be used."""

    name: str
    proxy: str
    transport: Transport = Transport.UDP
    cps: float = 10.0
    max_concurrent: int = 100
    domain: str = ""  # host of Request-URIs built from bare numbers; empty: the proxy host
    caller_user: str = ""
    caller_display_name: str = ""
    asserted_identity: str = ""
    asserted_identity_display_name: str = ""
    privacy: tuple[str, ...] = ()
    credentials: Credentials | None = None
    codecs: tuple[Codec, ...] = ()
    srtp: bool = False
    session_expires: int | None = None
    ring_timeout: float = 60.0
    max_call_duration: float = 3600.0
    rtp_port: int = 0

    @property
    def proxy_host(self) -> str:
        host, _, _ = _split_hostport(self.proxy)
        return host

    def request_uri(self, to: str) -> str:
        """`to` as a Request-URI: a sip:/sips:/tel: URI stays, a bare number goes to the domain."""
        text = to.strip()
        if not text:
            raise ConfigError("to: empty destination")
        if text.lower().startswith(("sip:", "sips:", "tel:")):
            return text
        scheme = "sips" if self.transport is Transport.TLS else "sip"
        host = self.domain or self.proxy_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}:{text}@{host}"

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
    return parse_trunks(document, source=str(file))


def parse_trunks(document: Mapping[str, Any], *, source: str = "<trunks>") -> TrunksFile:
    unknown_top = set(document) - {"trunks", "defaults"}
    if unknown_top:
        raise ConfigError(f"{source}: {sorted(unknown_top)[0]}: unknown table (use [trunks.NAME])")
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
        trunks[name] = _parse_trunk(name, merged, f"{source}: trunks.{name}")
    return TrunksFile(path=source, trunks=trunks)


def resolve_trunks(settings: Settings, trunks_file: str | None = None) -> TrunksFile:
    """The trunks file named by the flag, else by OUTBOUND_TRUNKS_FILE."""
    path = trunks_file or settings.trunks_file
    if not path:
        raise ConfigError("no trunks file: pass --trunks FILE or set OUTBOUND_TRUNKS_FILE")
    return load_trunks(path)


_KNOWN_KEYS = frozenset({
    "proxy", "transport", "cps", "max_concurrent", "domain", "caller_user",
    "caller_display_name", "asserted_identity", "asserted_identity_display_name", "privacy",
    "credentials", "codecs", "srtp", "session_expires", "ring_timeout", "max_call_duration",
    "rtp_port",
})
_CODECS_BY_NAME = {codec.name.lower(): codec for codec in DEFAULT_CODECS}


def _parse_trunk(name: str, table: Mapping[str, Any], where: str) -> TrunkConfig:
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key")
    reader = _Reader(table, where)
    proxy = reader.text("proxy", required=True)
    try:
        _split_hostport(proxy)
    except ValueError as exc:
        raise ConfigError(f"{where}.proxy: {exc}") from None
    transport_text = reader.text("transport", default="udp")
    try:
        transport = Transport.parse(transport_text)
    except ValueError as exc:
        raise ConfigError(f"{where}.transport: {exc}") from None
    session_expires = reader.integer("session_expires", default=0, minimum=0)
    if 0 < session_expires < 90:
        raise ConfigError(
            f"{where}.session_expires: {session_expires} is below the RFC 4028 minimum of 90 s "
            "(0 disables the session timer)"
        )
    return TrunkConfig(
        name=name,
        proxy=proxy,
        transport=transport,
        cps=reader.number("cps", default=10.0, minimum=0.001),
        max_concurrent=reader.integer("max_concurrent", default=100, minimum=1),
        domain=reader.text("domain", default=""),
        caller_user=reader.text("caller_user", default=""),
        caller_display_name=reader.text("caller_display_name", default=""),
        asserted_identity=reader.text("asserted_identity", default=""),
        asserted_identity_display_name=reader.text("asserted_identity_display_name", default=""),
        privacy=reader.words("privacy"),
        credentials=_parse_credentials(table.get("credentials"), f"{where}.credentials"),
        codecs=_parse_codecs(reader.words("codecs"), f"{where}.codecs"),
        srtp=reader.boolean("srtp", default=False),
        session_expires=session_expires or None,
        ring_timeout=reader.number("ring_timeout", default=60.0, minimum=0.001),
        max_call_duration=reader.number("max_call_duration", default=3600.0, minimum=0.001),
        rtp_port=reader.integer("rtp_port", default=0, minimum=0, maximum=65535),
    )


def _parse_credentials(value: Any, where: str) -> Credentials | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table with username and password")
    unknown = sorted(set(value) - {"username", "password", "realm"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key")
    reader = _Reader(value, where)
    realm = reader.text("realm", default="")
    return Credentials(
        username=reader.text("username", required=True),
        password=reader.text("password", required=True, allow_empty=True),
        realm=realm or None,
    )


def _parse_codecs(names: tuple[str, ...], where: str) -> tuple[Codec, ...]:
    codecs: list[Codec] = []
    for name in names:
        codec = _CODECS_BY_NAME.get(name.lower())
        if codec is None:
            known = ", ".join(c.name for c in DEFAULT_CODECS)
            raise ConfigError(f"{where}: unknown codec {name!r} (known: {known})")
        if codec not in codecs:
            codecs.append(codec)
    if codecs and all(c.name == "telephone-event" for c in codecs):
        raise ConfigError(f"{where}: needs at least one audio codec besides telephone-event")
    return tuple(codecs)


class _Reader:
    """Typed reads from one TOML table, each error naming the key."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self._table = table
        self._where = where

    def _fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self._where}.{key}: {reason}")

    def text(
        self, key: str, *, default: str = "", required: bool = False, allow_empty: bool = False
    ) -> str:
        if key not in self._table:
            if required:
                raise self._fail(key, "missing (required)")
            return default
        value = self._table[key]
        if not isinstance(value, str):
            raise self._fail(key, f"must be a string, got {type(value).__name__}")
        if required and not allow_empty and not value.strip():
            raise self._fail(key, "must not be empty")
        if any(ch in value for ch in "\r\n\0"):
            raise self._fail(key, "must not contain line breaks or NUL")
        return value.strip() if not allow_empty else value

    def number(self, key: str, *, default: float, minimum: float) -> float:
        value = self._table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or value < minimum:
            raise self._fail(key, f"must be a number >= {minimum:g}, got {value!r}")
        return float(value)

    def integer(
        self, key: str, *, default: int, minimum: int, maximum: int | None = None
    ) -> int:
        value = self._table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, got {type(value).__name__}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self._fail(key, f"must be an integer {bound}, got {value}")
        return value

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._table.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be true or false, got {type(value).__name__}")
        return value

    def words(self, key: str) -> tuple[str, ...]:
        value = self._table.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            raise self._fail(key, "must be a list of non-empty strings")
        return tuple(item.strip() for item in value)


def _is_trunk_name(name: str) -> bool:
    return bool(name) and all(ch.isalnum() or ch in "-_." for ch in name)


def _split_hostport(text: str) -> tuple[str, int | None, str]:
    """'host:port', '[v6]:port', 'host' -> (host, port or None, text); ValueError when bad."""
    value = text.strip()
    if not value:
        raise ValueError("empty address (expected host:port)")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed '[' in IPv6 address")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: unexpected text after ']'")
        port_text = rest[1:] if rest else ""
    elif value.count(":") > 1:
        raise ValueError(f"{text!r}: write IPv6 addresses as [addr]:port")
    else:
        host, _, port_text = value.partition(":")
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"{text!r}: missing or bad host")
    if port_text == "" and value.endswith(":"):
        raise ValueError(f"{text!r}: empty port")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"{text!r}: port must be 1-65535")
        port = int(port_text)
    return host, port, value


def with_overrides(trunk: TrunkConfig, **changes: Any) -> TrunkConfig:
    """A copy of a trunk with some fields changed (CLI flags, tests)."""
    return replace(trunk, **changes)
