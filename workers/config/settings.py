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
    tls_ca_file = "carrier-ca.pem"   # CA bundle the carrier's TLS certificate must chain to
                                     # (default: the system store)
    tls_cert_file = "worker.pem"     # our TLS listener's certificate chain (sips: Contacts
    tls_key_file = "worker.key"      # point at it); also offered if the carrier asks for one
    [trunks.carrier-a.credentials]                      # digest, optional
    username = "acme"
    password = "secret"
    realm = "carrier.example"    # optional: answer any realm

Relative TLS file paths are read from the trunks file's directory. `OUTBOUND_TLS_CERT_FILE`
and `OUTBOUND_TLS_KEY_FILE` (or the worker's flags) override the trunk's listener files. The
TLS files are opened when a worker starts (`worker_tls`), not when the trunks file is read:
schedulers read the same file without holding the workers' keys.

A wrong file is refused at start with the file, the key and the reason; a malformed
`OUTBOUND_*_URL` is refused naming the variable (its password hidden).
"""

from __future__ import annotations

import math
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from models.dial_fields import DialFields, InvalidDialRequest
from sipstack.dial import Credentials, DialRequest
from sipstack.errors import SipParseError
from sipstack.sdp import DEFAULT_CODECS, Codec
from sipstack.target import parse_hostport
from sipstack.transport import Address, Transport
from sipstack.uri import format_host, parse_host, parse_uri
from workers.contract.dial_message import is_uri, phone_number

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from workers.signaling.transports import TransportConfig

T = TypeVar("T")

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbound"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A setting or the trunks file is wrong; the message names the key and the reason."""


_URL_PASSWORD = re.compile(r"(://[^/?#@:]*):[^/?#@]*@")


def hide_password(url: object) -> str:
    """A URL fit to print: the password of `scheme://user:password@host` becomes `***`."""
    return _URL_PASSWORD.sub(r"\1:***@", str(url))


def check_database_url(text: str, setting: str) -> URL:
    """`text` as a SQLAlchemy URL whose driver is installed (`postgresql://` means psycopg 3);
    ConfigError naming `setting` otherwise. Nothing is connected."""
    from sqlalchemy.exc import ArgumentError

    from models.db import database_url

    shown = f"{setting}={hide_password(text)!r}"
    try:
        url = database_url(text)
        url.get_dialect().import_dbapi()
    except ArgumentError as error:  # unparsable, or an unknown dialect
        raise ConfigError(f"{shown}: not a usable database URL ({error})") from None
    except ValueError as error:  # a port that is not a number
        raise ConfigError(f"{shown}: not a usable database URL ({error})") from None
    except ImportError as error:
        raise ConfigError(f"{shown}: its driver {error.name!r} is not installed") from None
    return url


def check_redis_url(text: str, setting: str) -> str:
    """`text` as a redis://, rediss:// or unix:// URL; ConfigError naming `setting` otherwise."""
    from redis.connection import parse_url

    try:
        parse_url(text)
    except ValueError as error:
        raise ConfigError(
            f"{setting}={hide_password(text)!r}: not a Redis URL ({error})"
        ) from None
    return text


def check_broker_url(text: str, setting: str) -> str:
    """`text` as a URL of a Celery broker transport that is installed (Redis URLs are checked
    as such); ConfigError naming `setting` otherwise."""
    from kombu.transport import resolve_transport
    from kombu.utils.url import url_to_parts

    shown = f"{setting}={hide_password(text)!r}"
    try:
        scheme = url_to_parts(text).scheme
        resolve_transport(scheme)
    except KeyError as error:  # kombu: "No such transport: x"
        raise ConfigError(f"{shown}: not a broker URL ({error.args[0]})") from None
    except ValueError as error:
        raise ConfigError(f"{shown}: not a broker URL ({error})") from None
    except ImportError as error:
        raise ConfigError(f"{shown}: its transport library {error.name!r} is not installed") \
            from None
    if scheme in ("redis", "rediss", "unix"):
        check_redis_url(text, setting)
    return text


_VARIABLES = {  # Settings field -> environment variable
    "database_url": "OUTBOUND_DATABASE_URL",
    "redis_url": "OUTBOUND_REDIS_URL",
    "broker_url": "OUTBOUND_BROKER_URL",  # default: the Redis URL
    "trunks_file": "OUTBOUND_TRUNKS_FILE",
    "key_prefix": "OUTBOUND_KEY_PREFIX",
    "events_maxlen": "OUTBOUND_EVENTS_MAXLEN",
    "heartbeat_ttl": "OUTBOUND_HEARTBEAT_TTL",
    "drain_timeout": "OUTBOUND_DRAIN_TIMEOUT",
    "visibility_timeout": "OUTBOUND_VISIBILITY_TIMEOUT",
    "control_expires": "OUTBOUND_CONTROL_EXPIRES",
    "tls_cert_file": "OUTBOUND_TLS_CERT_FILE",
    "tls_key_file": "OUTBOUND_TLS_KEY_FILE",
}
_NUMBERS: dict[str, Callable[[str], float]] = {  # each must be positive
    "events_maxlen": int,
    "heartbeat_ttl": float,
    "drain_timeout": float,
    "visibility_timeout": float,
    "control_expires": float,
}


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
    # The worker's TLS listener (override the trunk's tls_cert_file / tls_key_file).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `OUTBOUND_*`; keyword overrides (from flags) win when not None. A bad value is
        a ConfigError naming the variable it came from."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        names: dict[str, str] = {}  # field -> the variable it was read from
        for name, variable in _VARIABLES.items():
            raw = source.get(variable)
            if not raw:
                continue
            names[name] = variable
            values[name] = raw
            if name in _NUMBERS:
                try:
                    values[name] = _NUMBERS[name](raw)
                except ValueError:
                    raise ConfigError(f"{variable}={raw!r}: not a number") from None
        if "broker_url" not in values and "redis_url" in values:
            values["broker_url"] = values["redis_url"]
            names["broker_url"] = names["redis_url"]
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
                names.pop(name, None)
        settings = cls(**values)
        settings.check(names)
        return settings

    def check(self, names: Mapping[str, str] | None = None) -> None:
        """Refuse bad values; `names` maps a field to the variable it was read from, which the
        error then names instead of the field. Nothing is connected."""
        names = names or {}
        check_database_url(self.database_url, names.get("database_url", "database_url"))
        check_redis_url(self.redis_url, names.get("redis_url", "redis_url"))
        check_broker_url(self.broker_url, names.get("broker_url", "broker_url"))
        for name in _NUMBERS:
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                setting = names.get(name, name)
                raise ConfigError(f"{setting}: must be a positive number, got {value!r}")
        if not self.key_prefix or any(ch.isspace() for ch in self.key_prefix):
            setting = names.get("key_prefix", "key_prefix")
            raise ConfigError(f"{setting}: must be non-empty without spaces: {self.key_prefix!r}")

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
    tls_ca_file: str | None = None  # None: the system store
    tls_cert_file: str | None = None  # our TLS listener's chain (and client cert if asked)
    tls_key_file: str | None = None  # None: the key is in tls_cert_file

    def transport_config(self, bind_host: str, udp_port: int) -> TransportConfig:
        """The worker's sockets for this trunk: UDP on `udp_port`, TCP beside it, and a TLS
        listener (the port after, or any free one with `udp_port` 0) when the trunk has a
        certificate, so a `sips:` Contact names an address that answers TLS."""
        from workers.signaling.transports import TransportConfig

        return TransportConfig(
            bind_host=bind_host, udp_port=udp_port, tls_ca_file=self.tls_ca_file,
            tls_cert_file=self.tls_cert_file, tls_key_file=self.tls_key_file,
            tls_server_cert_file=self.tls_cert_file, tls_server_key_file=self.tls_key_file,
        )

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
        trunks[name] = _parse_trunk(name, merged, f"{source}: trunks.{name}", base_dir)
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
    "rtp_port", "tls_ca_file", "tls_cert_file", "tls_key_file",
})
_CODECS_BY_NAME = {codec.name.lower(): codec for codec in DEFAULT_CODECS}


def _parse_trunk(
    name: str, table: Mapping[str, Any], where: str, base_dir: Path | None
) -> TrunkConfig:
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key")
    reader = _Reader(table, where)
    transport_text = reader.text("transport", default="udp")
    try:
        transport = Transport.parse(transport_text)
    except ValueError as exc:
        raise ConfigError(f"{where}.transport: {exc}") from None
    proxy = reader.text("proxy", required=True)
    if proxy.count(":") > 1 and not proxy.startswith("["):
        # "::1:5060" is itself an IPv6 address: only brackets say where the port begins.
        raise ConfigError(f"{where}.proxy: {proxy!r}: write an IPv6 address as [addr]:port")
    _parsed(where, "proxy", lambda: parse_hostport(proxy, transport.default_port))
    domain = reader.text("domain", default="")
    if domain:  # kept without IPv6 brackets, as a host is everywhere else
        domain = _parsed(where, "domain", lambda: parse_host(domain, "host"))
    asserted_identity = reader.text("asserted_identity", default="")
    if asserted_identity:
        _parsed(where, "asserted_identity", lambda: parse_uri(asserted_identity))
    session_expires = reader.integer("session_expires", default=0, minimum=0)
    if 0 < session_expires < 90:
        raise ConfigError(
            f"{where}.session_expires: {session_expires} is below the RFC 4028 minimum of 90 s "
            "(0 disables the session timer)"
        )
    tls_cert_file = reader.path("tls_cert_file", base_dir)
    tls_key_file = reader.path("tls_key_file", base_dir)
    if tls_key_file and not tls_cert_file:
        raise ConfigError(f"{where}.tls_key_file: given without tls_cert_file")
    return TrunkConfig(
        name=name,
        proxy=proxy,
        transport=transport,
        cps=reader.number("cps", default=10.0, minimum=0.001),
        max_concurrent=reader.integer("max_concurrent", default=100, minimum=1),
        domain=domain,
        caller_user=reader.text("caller_user", default=""),
        caller_display_name=reader.text("caller_display_name", default=""),
        asserted_identity=asserted_identity,
        asserted_identity_display_name=reader.text("asserted_identity_display_name", default=""),
        privacy=reader.words("privacy"),
        credentials=_parse_credentials(table.get("credentials"), f"{where}.credentials"),
        codecs=_parse_codecs(reader.words("codecs"), f"{where}.codecs"),
        srtp=reader.boolean("srtp", default=False),
        session_expires=session_expires or None,
        ring_timeout=reader.number("ring_timeout", default=60.0, minimum=0.001),
        max_call_duration=reader.number("max_call_duration", default=3600.0, minimum=0.001),
        rtp_port=reader.integer("rtp_port", default=0, minimum=0, maximum=65535),
        tls_ca_file=reader.path("tls_ca_file", base_dir),
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file,
    )


def _parsed(where: str, key: str, parse: Callable[[], T]) -> T:
    """Run a sipstack parser on a key's value; its SipParseError becomes the key's ConfigError."""
    try:
        return parse()
    except SipParseError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None


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

    def path(self, key: str, base_dir: Path | None) -> str | None:
        """A file name (None when absent); relative ones are taken from `base_dir`."""
        text = self.text(key, default="")
        if not text:
            return None
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return str(path)

    def words(self, key: str) -> tuple[str, ...]:
        value = self._table.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            raise self._fail(key, "must be a list of non-empty strings")
        return tuple(item.strip() for item in value)


def _is_trunk_name(name: str) -> bool:
    return bool(name) and all(ch.isalnum() or ch in "-_." for ch in name)


def worker_tls(
    trunk: TrunkConfig,
    settings: Settings,
    *,
    trunks_path: str,
    cert_setting: str = _VARIABLES["tls_cert_file"],
    key_setting: str = _VARIABLES["tls_key_file"],
) -> TrunkConfig:
    """The trunk with the TLS files a worker uses, each one opened and checked.

    The listener's certificate and key come from `settings` (named `cert_setting` and
    `key_setting` in errors: a flag or a variable) when set there, else from the trunk's table.
    ConfigError names the setting or the file and key, the path and what is wrong with it.
    """
    where = f"{trunks_path}: trunks.{trunk.name}"
    cert, key = trunk.tls_cert_file, trunk.tls_key_file
    cert_name, key_name = f"{where}.tls_cert_file", f"{where}.tls_key_file"
    if settings.tls_cert_file:
        cert, cert_name = settings.tls_cert_file, cert_setting
        key, key_name = None, key_setting  # the trunk's key belongs to the trunk's certificate
    if settings.tls_key_file:
        if not settings.tls_cert_file:
            raise ConfigError(f"{key_setting}: given without {cert_setting}")
        key = settings.tls_key_file
    if trunk.tls_ca_file:
        check_ca_file(trunk.tls_ca_file, f"{where}.tls_ca_file")
    if cert:
        check_certificate(cert, key, cert_setting=cert_name, key_setting=key_name)
    return replace(trunk, tls_cert_file=cert, tls_key_file=key)


def _unreadable(path: str, setting: str) -> ConfigError | None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        return ConfigError(f"{setting}: {path}: cannot read ({error.strerror or error})")
    return None


def check_ca_file(path: str, setting: str) -> None:
    """`path` holds PEM CA certificates; ConfigError naming `setting` and the path if not."""
    problem = _unreadable(path, setting)
    if problem is not None:
        raise problem
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as error:
        raise ConfigError(
            f"{setting}: {path}: no PEM CA certificate in it ({error.reason or error})"
        ) from None


def check_certificate(
    cert: str, key: str | None, *, cert_setting: str, key_setting: str
) -> None:
    """`cert` (and `key`, else the key inside `cert`) load as a TLS server identity."""
    for path, setting in ((cert, cert_setting), (key, key_setting)):
        if path is not None:
            problem = _unreadable(path, setting)
            if problem is not None:
                raise problem
    encrypted = False

    def password() -> bytes:  # called only for an encrypted key; never prompt on a terminal
        nonlocal encrypted
        encrypted = True
        return b""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=password)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if encrypted:
            raise ConfigError(
                f"{key_setting if key else cert_setting}: {key or cert}: the private key is "
                "encrypted (a worker starts unattended: give it an unencrypted key file)"
            ) from None
        if reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{key_setting}: {key}: this key does not belong to the certificate in {cert}"
            ) from None
        if key is None:
            raise ConfigError(
                f"{cert_setting}: {cert}: not a PEM certificate followed by its private key "
                f"(or set the key file) ({reason})"
            ) from None
        if _holds_certificate(cert):
            raise ConfigError(
                f"{key_setting}: {key}: no PEM private key in it ({reason})"
            ) from None
        raise ConfigError(f"{cert_setting}: {cert}: no PEM certificate in it ({reason})") from None


def _holds_certificate(path: str) -> bool:
    with open(path, "rb") as file:
        return b"-----BEGIN CERTIFICATE-----" in file.read()


def with_overrides(trunk: TrunkConfig, **changes: Any) -> TrunkConfig:
    """A copy of a trunk with some fields changed (CLI flags, tests)."""
    return replace(trunk, **changes)
