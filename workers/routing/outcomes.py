"""A leg's typed outcome (sipstack.outcome) from its CDR: the local cause the record implies.

The core's CdrRecord says what happened in its own words (disposition, hangup class, error);
`local_cause` maps those onto `LocalCause` as docs/routing.md lists it, and `leg_outcome`
classifies with the trunk's `OutcomeRules`. A cause the worker knows better (a dial that
expired, a target it could not dial) is passed in and wins.
"""

from __future__ import annotations

from sipstack.cdr import CdrRecord, Disposition, HangupBy
from sipstack.errors import LocalProtocolError
from sipstack.outcome import LocalCause, Outcome, OutcomeRules, classify_outcome
from sipstack.reason import ReasonValue
from sipstack.uac_base import CONNECTION_LOST


def local_cause(record: CdrRecord) -> LocalCause | None:
    """What ended the leg when its final status alone does not tell (None: the status does)."""
    if record.answered_at is not None:
        return LocalCause.REMOTE_HANGUP if record.hangup_by is HangupBy.REMOTE else (
            LocalCause.LOCAL_HANGUP)
    if record.disposition is Disposition.NO_ANSWER and record.final_status_code in (None, 487):
        return LocalCause.RING_TIMEOUT  # classify_disposition: only our ring timer gives this
    if record.disposition is Disposition.CANCELLED:
        return LocalCause.LOCAL_HANGUP  # we gave up (operator, drain): the caller side's choice
    if record.final_status_code is None:
        if record.error is not None and CONNECTION_LOST in record.error:
            return LocalCause.TRANSPORT_ERROR
        return LocalCause.TRANSACTION_TIMEOUT
    return None


def far_reason(record: CdrRecord) -> ReasonValue | None:
    """The far end's Reason of a failed leg (a Reason we sent says nothing about them)."""
    if record.hangup_by is not HangupBy.REMOTE or not record.reason_protocol:
        return None
    try:
        return ReasonValue(record.reason_protocol, record.reason_cause, record.reason_text)
    except LocalProtocolError:
        return None


def leg_outcome(
    record: CdrRecord, rules: OutcomeRules | None = None, cause: LocalCause | None = None
) -> Outcome:
    """The outcome a CDR and terminal event carry."""
    status = record.final_status_code
    if status is not None and not 200 <= status <= 699:
        status = None
    return classify_outcome(
        status, rang=record.first_provisional_at is not None,
        cause=cause or local_cause(record), reason=far_reason(record), rules=rules,
    )
