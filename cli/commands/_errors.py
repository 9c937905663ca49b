"""How every `outbound` command fails: one line naming the setting or the service, never a
traceback; configuration and usage errors exit 2, unreachable services exit 1.

    @click.command("x", epilog=exit_status_help("done"))
    @reports_errors
    def command() -> None:
        settings = Settings.from_env()     # ConfigError -> "OUTBOUND_REDIS_URL='nope://': ..." (2)
        watch_services(settings)           # so a refused connection names the URL
        ...                                # OperationalError -> "cannot reach the database ..." (1)

Exit status 1 is also what a command returns when it ran but did not get what was asked
(a leg not cancelled, a call not answered); each command's --help says which.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from models.dial_fields import InvalidDialRequest
from workers.config.settings import ConfigError, Settings, check_database_url, hide_password

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from models.repository import Repository

EXIT_UNAVAILABLE = 1
EXIT_CONFIG = 2

P = ParamSpec("P")
R = TypeVar("R")

_SERVICES_KEY = "outbound.services"
# PostgreSQL SQLSTATEs of a schema that is missing or older than the code (undefined table,
# undefined column): `outbound migrate` is the cure.
_SCHEMA_MISSING = frozenset({"42P01", "42703"})


class ConfigFailure(click.ClickException):
    """A configuration error: the message names the variable, or the file and the key."""

    exit_code = EXIT_CONFIG


class ServiceUnavailable(click.ClickException):
    """PostgreSQL, Redis or the broker cannot be reached (or has no schema yet)."""

    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Services:
    """The URLs a command uses, shown (password hidden) when their service fails."""

    database: str = ""
    redis: str = ""
    broker: str = ""


def exit_status_help(ok: str, *, not_done: str | None = None, services: bool = True) -> str:
    """The `Exit status` paragraph of a command's --help epilog: what 0 means, what else 1
    means (`not_done`), and whether the command uses PostgreSQL, Redis or the broker."""
    ones = [not_done] if not_done else []
    if services:
        ones.append("PostgreSQL, Redis or the broker cannot be reached (the message names which, "
                    "at which URL)")
    one = f"; 1 {', or '.join(ones)}" if ones else ""
    return (f"Exit status: 0 {ok}{one}; 2 usage or configuration error (the message names the "
            "flag, the environment variable, or the file and key); never a traceback.")


def watch_services(
    settings: Settings | None = None, *, database: object = None, redis: str | None = None,
    broker: str | None = None,
) -> None:
    """Remember which URLs this command uses, so that a failure names them."""
    context = click.get_current_context(silent=True)
    if context is None:
        return
    current: Services = context.meta.get(_SERVICES_KEY, Services())
    if settings is not None:
        current = Services(settings.database_url, settings.redis_url, settings.broker_url)
    context.meta[_SERVICES_KEY] = Services(
        database=str(database) if database is not None else current.database,
        redis=redis if redis is not None else current.redis,
        broker=broker if broker is not None else current.broker,
    )


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a click callback: configuration and service errors become one-line click errors
    with the exit status of this module; anything else (a bug) keeps its traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Exception as error:
            failure = as_click_error(error)
            if failure is None:
                raise
            raise failure from None

    return run


def as_click_error(error: BaseException) -> click.ClickException | None:
    """The click error to show for `error`, or None when it is not a configuration or service
    error (click's own errors pass through unchanged: they already have their status)."""
    if isinstance(error, click.ClickException):
        return None
    if isinstance(error, ConfigError):
        return ConfigFailure(str(error))
    if isinstance(error, InvalidDialRequest):
        return click.UsageError(str(error))
    services = _services()
    if _is(error, "sqlalchemy.exc", "ArgumentError"):
        return ConfigFailure(f"database URL{_shown(services.database)}: {error}")
    if _is(error, "sqlalchemy.exc", "ProgrammingError") and _sqlstate(error) in _SCHEMA_MISSING:
        return ServiceUnavailable(
            f"the database{_shown(services.database)} has no outbound schema or an old one "
            f"({_first_line(error)}): run `outbound migrate`"
        )
    if _is(error, "sqlalchemy.exc", "OperationalError") or _is(
        error, "sqlalchemy.exc", "InterfaceError"
    ):
        return ServiceUnavailable(
            f"cannot reach the database{_shown(services.database)}: {_first_line(error)}"
        )
    refused = _refused_setting(error, services)
    if refused is not None:
        return refused
    if _is(error, "redis.exceptions", "ConnectionError") or _is(
        error, "redis.exceptions", "TimeoutError"
    ):
        return ServiceUnavailable(f"cannot reach Redis{_shown(services.redis)}: {error}")
    if _is(error, "kombu.exceptions", "OperationalError"):
        return ServiceUnavailable(f"cannot reach the broker{_shown(services.broker)}: {error}")
    return None


def _refused_setting(error: BaseException, services: Services) -> ConfigFailure | None:
    """A service that answered and refused what its URL asks (wrong password, no such vhost,
    a Redis db index out of range): a configuration error naming the setting (exit 2)."""
    if _is(error, "redis.exceptions", "AuthenticationError") or _is(
        error, "redis.exceptions", "ResponseError"
    ):
        return ConfigFailure(
            f"OUTBOUND_REDIS_URL{_shown(services.redis)}: Redis refused it: {_first_line(error)}"
        )
    if any(_is(error, "amqp.exceptions", name) for name in ("AccessRefused", "NotAllowed")):
        return ConfigFailure(
            f"OUTBOUND_BROKER_URL{_shown(services.broker)}: the broker refused it "
            "(user, password or vhost): " + _first_line(error)
        )
    return None


def _services() -> Services:
    context = click.get_current_context(silent=True)
    found = context.meta.get(_SERVICES_KEY) if context is not None else None
    return found if isinstance(found, Services) else Services()


def _is(error: BaseException, module: str, name: str) -> bool:
    # Only a library that was imported can have raised its errors: no import just to check.
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None)
    return isinstance(cls, type) and isinstance(error, cls)


def _sqlstate(error: BaseException) -> str | None:
    code = getattr(getattr(error, "orig", None), "sqlstate", None)
    return code if isinstance(code, str) else None


def _first_line(error: BaseException) -> str:
    # SQLAlchemy wraps the driver's error with the statement and a link: the driver's first
    # line is the part that says what happened.
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _shown(url: str) -> str:
    """` URL` with its password hidden, or nothing when the command did not say its URL."""
    return f" {hide_password(url)}" if url else ""


def quiet_repository(database_url: str) -> Repository:
    """A Repository for a one-shot command: it retries a lost connection like the workers do,
    without a warning per attempt (the last error is reported once, by `reports_errors`)."""
    from models.db import make_engine
    from models.repository import Repository
    from models.transient import retry_policy

    return Repository(make_engine(database_url), retry=retry_policy(before_sleep=None))


def setting_of(param: str, envvar: str) -> str:
    """What to call an option's value in an error: its flag when given on the command line,
    else the environment variable it was read from."""
    from click.core import ParameterSource

    context = click.get_current_context()
    if context.get_parameter_source(param) is ParameterSource.COMMANDLINE:
        return f"--{param.replace('_', '-')}"
    return envvar


def checked_database_url(value: str | None, param: str = "database_url") -> URL:
    """The URL of a `--database-url` option (its envvar OUTBOUND_DATABASE_URL, else the
    default), checked, and watched: a malformed one names the flag or the variable."""
    from models.db import DATABASE_URL_ENV, DEFAULT_DATABASE_URL

    url = check_database_url(value or DEFAULT_DATABASE_URL, setting_of(param, DATABASE_URL_ENV))
    watch_services(database=url)
    return url
