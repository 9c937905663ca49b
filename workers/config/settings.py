"""Worker settings (flags > environment `OUTBOUND_*` > defaults) and the trunks TOML file.

`Settings` is a pydantic model (its defaults are written once, there); `OUTBOUND_*` is read
with pydantic-settings. The trunks file is workers.config.trunks (`TrunkConfig`, a pydantic
model refusing unknown keys), the worker's TLS files workers.config.tls; their names are
re-exported here for callers.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from workers.config.errors import ConfigError, hide_password
from workers.config.tls import check_ca_file, check_certificate, worker_tls
from workers.config.trunks import (
    TrunkConfig,
    TrunksFile,
    load_trunks,
    parse_trunks,
    with_overrides,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "DEFAULT_DATABASE_URL", "DEFAULT_REDIS_URL", "ConfigError", "Settings", "TrunkConfig",
    "TrunksFile", "check_broker_url", "check_ca_file", "check_certificate",
    "check_database_url", "check_redis_url", "hide_password", "load_trunks", "parse_trunks",
    "resolve_trunks", "with_overrides", "worker_tls",
]

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbound"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "OUTBOUND_"


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


_POSITIVE = ("events_maxlen", "heartbeat_ttl", "drain_timeout", "visibility_timeout",
             "control_expires", "dns_timeout")


class Settings(BaseModel):
    """Process-wide settings of workers, clients and the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = DEFAULT_REDIS_URL  # from the environment: the Redis URL unless given
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
    # RFC 3263 look-ups of trunks with `locate = true`: "ip[:port]" (empty: resolv.conf)
    dns_nameserver: str = ""
    dns_timeout: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `OUTBOUND_*` (`env`, default the process environment); keyword overrides (from
        flags) win when not None. A bad value is a ConfigError naming the variable it came
        from."""
        values: dict[str, Any] = _read_environment(env)
        names = {name: ENV_PREFIX + name.upper() for name in values}  # field -> its variable
        if "broker_url" not in values and "redis_url" in values:
            values["broker_url"] = values["redis_url"]
            names["broker_url"] = names["redis_url"]
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
                names.pop(name, None)
        try:
            settings = cls(**values)
        except ValidationError as error:
            problem = error.errors()[0]
            name = str(problem["loc"][0]) if problem["loc"] else ""
            if name in names:
                raise ConfigError(f"{names[name]}={values[name]!r}: not a number") from None
            raise ConfigError(f"{name}: {problem['msg']}") from None
        settings.check(names)
        return settings

    def check(self, names: Mapping[str, str] | None = None) -> None:
        """Refuse bad values; `names` maps a field to the variable it was read from, which the
        error then names instead of the field. Nothing is connected."""
        names = names or {}
        check_database_url(self.database_url, names.get("database_url", "database_url"))
        check_redis_url(self.redis_url, names.get("redis_url", "redis_url"))
        check_broker_url(self.broker_url, names.get("broker_url", "broker_url"))
        for name in _POSITIVE:
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


class _Environment(BaseSettings):
    """The `OUTBOUND_*` variables as text (Settings converts and checks them, so an error can
    name the variable and show what it held). Empty ones count as unset."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=True,
                                      env_ignore_empty=True, extra="ignore")

    DATABASE_URL: str | None = None
    REDIS_URL: str | None = None
    BROKER_URL: str | None = None
    TRUNKS_FILE: str | None = None
    KEY_PREFIX: str | None = None
    EVENTS_MAXLEN: str | None = None
    HEARTBEAT_TTL: str | None = None
    DRAIN_TIMEOUT: str | None = None
    VISIBILITY_TIMEOUT: str | None = None
    CONTROL_EXPIRES: str | None = None
    TLS_CERT_FILE: str | None = None
    TLS_KEY_FILE: str | None = None
    DNS_NAMESERVER: str | None = None
    DNS_TIMEOUT: str | None = None


def _read_environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """Settings field -> the text of its `OUTBOUND_*` variable, for the variables set."""
    source = EnvSettingsSource(_Environment)
    if env is not None:  # a given mapping instead of the process environment
        source.env_vars = {key: value for key, value in env.items() if value}
    read = source()
    return {name.lower(): str(value) for name, value in read.items() if value}


def resolve_trunks(settings: Settings, trunks_file: str | None = None) -> TrunksFile:
    """The trunks file named by the flag, else by OUTBOUND_TRUNKS_FILE."""
    path = trunks_file or settings.trunks_file
    if not path:
        raise ConfigError("no trunks file: pass --trunks FILE or set OUTBOUND_TRUNKS_FILE")
    return load_trunks(path)


