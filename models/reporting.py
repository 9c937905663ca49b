"""CDR report figures (ASR, ACD, NER, PDD, counts) over a time range, grouped as asked.

Definitions (docs/cdr.md has the long form): attempts = CDRs whose started_at is in
[since, until); ASR = answered / attempts; ACD = sum(billsec) / answered, in seconds;
NER (ITU-T E.425) = (answered + busy + no_answer + rejected) / attempts; mean PDD = mean of
first_provisional_at - started_at over CDRs with a provisional response, in milliseconds.
The `cdr_report_*` views in the migration hold the same figures without a time range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, Select, Table, cast, func, literal_column, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from models.cdrs import Cdr
from sipstack.cdr import Disposition, HangupReason

GROUPINGS = ("trunk", "scenario", "hour", "day")
# Dispositions that count as the network having done its job (ITU-T E.425 effective calls).
EFFECTIVE_DISPOSITIONS = (
    Disposition.ANSWERED,
    Disposition.BUSY,
    Disposition.NO_ANSWER,
    Disposition.REJECTED,
)

_cdrs: Table = Cdr.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class ReportRow:
    group: str | None  # trunk, scenario, or the UTC period start (ISO 8601); None: all CDRs
    attempts: int
    answered: int
    asr: float | None
    acd_seconds: float | None
    ner: float | None
    mean_pdd_ms: float | None
    billsec_total: int
    dispositions: dict[str, int] = field(default_factory=dict)
    hangup_reasons: dict[str, int] = field(default_factory=dict)


def _ratio(numerator: Any, denominator: Any) -> Any:
    # Both sides float8, so the database divides in floating point (no numeric casts).
    return cast(numerator, Float) / cast(func.nullif(denominator, 0), Float)


def _period(by: str, dialect: str) -> Any:
    started = _cdrs.c.started_at
    if dialect == "postgresql":
        # date_bin (PostgreSQL 14+) on an origin at UTC midnight gives UTC hours and days; it
        # is cheaper per row than date_trunc on started_at AT TIME ZONE 'UTC'.
        width = "INTERVAL '1 hour'" if by == "hour" else "INTERVAL '1 day'"
        origin = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
        return func.date_bin(literal_column(width), started, literal_column(origin))
    # SQLite stores UTC wall-clock text: cut it to the hour or the day.
    pattern = "%Y-%m-%dT%H:00:00" if by == "hour" else "%Y-%m-%dT00:00:00"
    return func.strftime(pattern, started)


def _pdd_sum(dialect: str) -> Any:
    """Per-row PDD summed in the inner query: an interval on PostgreSQL, ms on SQLite."""
    first, started = _cdrs.c.first_provisional_at, _cdrs.c.started_at
    if dialect == "postgresql":
        return func.sum(first - started)
    return func.sum((func.julianday(first) - func.julianday(started)) * 86_400_000)


def _pdd_mean_ms(dialect: str, pdd_sum: Any, pdd_count: Any) -> Any:
    total: Any = func.sum(pdd_sum)
    if dialect == "postgresql":
        total = cast(func.extract("epoch", total), Float) * 1000
    return _ratio(total, func.sum(pdd_count))


def report_statement(
    dialect: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str | None = None,
) -> Select[Any]:
    """The report query for `dialect` ('postgresql' or 'sqlite').

    Two steps: the inner query reads each CDR once and groups by (group, disposition,
    hangup_reason), a few hundred rows at most; the outer one turns those into the figures.
    Measured twice as fast on 1,000,000 CDRs as one pass of per-row FILTER clauses.
    """
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
    group: Any = None
    if by in ("trunk", "scenario"):
        group = _cdrs.c[by]
    elif by in ("hour", "day"):
        group = _period(by, dialect)
    keys = [_cdrs.c.disposition, _cdrs.c.hangup_reason]
    inner_columns: list[Any] = [
        *keys,
        func.count().label("n"),
        func.sum(_cdrs.c.billsec).label("billsec"),
        _pdd_sum(dialect).label("pdd_sum"),
        func.count(_cdrs.c.first_provisional_at).label("pdd_n"),
    ]
    inner_keys: list[Any] = list(keys)
    if group is not None:
        inner_columns.insert(0, group.label("grp"))
        inner_keys.insert(0, literal_column("grp"))
    inner_query = select(*inner_columns).select_from(_cdrs)
    if since is not None:
        inner_query = inner_query.where(_cdrs.c.started_at >= since)
    if until is not None:
        inner_query = inner_query.where(_cdrs.c.started_at < until)
    inner = inner_query.group_by(*inner_keys).subquery("per_outcome")

    attempts = func.coalesce(func.sum(inner.c.n), 0)
    disposition, reason = inner.c.disposition, inner.c.hangup_reason

    def calls(condition: Any) -> Any:
        return func.coalesce(func.sum(inner.c.n).filter(condition), 0)

    answered = calls(disposition == Disposition.ANSWERED)
    columns: list[Any] = [
        attempts.label("attempts"),
        answered.label("answered"),
        _ratio(answered, attempts).label("asr"),
        _ratio(func.sum(inner.c.billsec), answered).label("acd_seconds"),
        _ratio(calls(disposition.in_(EFFECTIVE_DISPOSITIONS)), attempts).label("ner"),
        _pdd_mean_ms(dialect, inner.c.pdd_sum, inner.c.pdd_n).label("mean_pdd_ms"),
        func.coalesce(func.sum(inner.c.billsec), 0).label("billsec_total"),
    ]
    columns += [
        calls(disposition == value).label(f"disposition_{value.value}") for value in Disposition
    ]
    columns += [calls(reason == value).label(f"hangup_{value.value}") for value in HangupReason]
    if group is None:
        return select(*columns).select_from(inner)
    return (
        select(inner.c.grp, *columns).select_from(inner).group_by(inner.c.grp).order_by(inner.c.grp)
    )


def build_report(
    bind: Engine | Connection | Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str | None = None,
) -> list[ReportRow]:
    """Run the report; without `by`, one row for everything in the range (attempts may be 0)."""
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    statement = report_statement(dialect, since=since, until=until, by=by)
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            result = connection.execute(statement).mappings().all()
    else:
        result = bind.execute(statement).mappings().all()
    return [row_from_mapping(row, by) for row in result]


def row_from_mapping(row: Any, by: str | None) -> ReportRow:
    """A ReportRow from the query's (or a `cdr_report_*` view's) columns."""
    group = row.get("grp", row.get("trunk", row.get("scenario", row.get("period"))))
    return ReportRow(
        group=_group_label(group, by),
        attempts=int(row["attempts"]),
        answered=int(row["answered"]),
        asr=_float(row["asr"]),
        acd_seconds=_float(row["acd_seconds"]),
        ner=_float(row["ner"]),
        mean_pdd_ms=_float(row["mean_pdd_ms"]),
        billsec_total=int(row["billsec_total"] or 0),
        dispositions={value.value: int(row[f"disposition_{value.value}"]) for value in Disposition},
        hangup_reasons={value.value: int(row[f"hangup_{value.value}"]) for value in HangupReason},
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _group_label(value: Any, by: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.strftime("%Y-%m-%dT%H:%MZ" if by == "hour" else "%Y-%m-%d")
    if by in ("hour", "day"):  # SQLite's text bucket
        parsed = datetime.fromisoformat(str(value))
        return parsed.strftime("%Y-%m-%dT%H:%MZ" if by == "hour" else "%Y-%m-%d")
    return str(value.value if hasattr(value, "value") else value)


__all__ = ["GROUPINGS", "ReportRow", "build_report", "report_statement", "row_from_mapping"]
