"""Which database errors are worth retrying, and the bounded tenacity policy that retries them."""

from __future__ import annotations

import logging
from typing import Any

import tenacity
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

# SQLSTATEs that say "try again later", not "this statement is wrong":
# class 08 connection exceptions, server shutting down / starting up, too many connections,
# and the two transaction conflicts a repeat resolves (serialization failure, deadlock).
_TRANSIENT_SQLSTATE_CLASSES = ("08",)
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})


def _sqlstate(error: BaseException) -> str | None:
    original = getattr(error, "orig", None)
    for candidate in (original, error):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def is_transient(error: BaseException) -> bool:
    """True for connection loss and server restarts; never for integrity or data errors."""
    if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError):
        return False
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    code = _sqlstate(error)
    if code is not None:
        return code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # No SQLSTATE at all: the server never answered (refused, reset, closed mid-query).
    return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)


# The database answers but is not migrated yet (`outbound migrate` not run): undefined table,
# undefined schema. Not the data's fault, and it clears once the operator migrates.
_UNMIGRATED_SQLSTATES = frozenset({"42P01", "3F000"})


def is_worth_waiting_for(error: BaseException) -> bool:
    """What a writer holding events waits out rather than drops: transient errors, and a
    database not migrated yet. Never integrity or data errors (the rows themselves are
    refused: waiting changes nothing)."""
    if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError):
        return False
    return is_transient(error) or _sqlstate(error) in _UNMIGRATED_SQLSTATES


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "database unavailable (attempt %d, retrying): %s",
        state.attempt_number,
        error.__class__.__name__ if error else "?",
    )


def retry_policy(
    *, attempts: int = 5, initial: float = 0.05, maximum: float = 2.0, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for tenacity.Retrying / AsyncRetrying: transient errors only, a bounded
    number of attempts, exponential backoff with full jitter (so restarted workers do not all
    reconnect in step), and the last error re-raised as itself."""
    policy: dict[str, Any] = {
        "retry": tenacity.retry_if_exception(is_transient),
        "stop": tenacity.stop_after_attempt(attempts),
        "wait": tenacity.wait_random_exponential(multiplier=initial, max=maximum),
        "reraise": True,
        "before_sleep": _log_retry,
    }
    policy.update(overrides)
    return policy
