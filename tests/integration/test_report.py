"""Report figures on a small hand-checked data set: the query, the SQL views, SQLite, the CLI."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import URL

from cli.main import main
from models.reporting import ReportRow, build_report, row_from_mapping
from models.repository import Repository
from sipstack.cdr import CdrRecord, Disposition, HangupReason
from tests.persisting import write_cdr

DAY1 = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
DAY2 = datetime(2024, 5, 2, tzinfo=UTC).timestamp()
HOUR = 3600.0

# name: (trunk, scenario, started, pdd s or None, answered after s or None, ended after s,
#        disposition, hangup_reason)
CALLS = {
    "A": ("t1", "campaign", DAY1 + 10 * HOUR, 0.5, 2.0, 32.0, "answered", "normal"),
    "B": ("t1", "campaign", DAY1 + 10.5 * HOUR, 1.5, None, 9.0, "busy", "normal"),
    "C": ("t1", "callback", DAY1 + 11.1 * HOUR, 2.0, None, 30.0, "no_answer", "timer_expired"),
    "D": ("t2", "campaign", DAY1 + 11.3 * HOUR, None, None, 4.0, "congestion", "error"),
    "E": ("t2", "callback", DAY2 + 9 * HOUR, 1.0, 1.0, 61.2, "answered", "user_hangup"),
    "F": ("t2", "campaign", DAY2 + 9.05 * HOUR, 0.5, None, 3.0, "cancelled", "normal"),
    "G": ("t1", "manual", DAY2 + 24 * HOUR - 1, 0.25, None, 0.5, "rejected", "user_hangup"),
}


def seed(repo: Repository, make_cdr: Callable[..., CdrRecord]) -> None:
    for name, (trunk, scenario, start, pdd, answer, end, disposition, reason) in CALLS.items():
        record = make_cdr(
            f"call-{name}",
            trunk=trunk,
            scenario=scenario,
            started_at=start,
            first_provisional_at=None if pdd is None else start + pdd,
            answered_at=None if answer is None else start + answer,
            ended_at=start + end,
            final_status_code=200 if disposition == "answered" else None,
            disposition=Disposition(disposition),
            hangup_reason=HangupReason(reason),
        )
        assert write_cdr(repo, record, "w1")


def by_group(rows: list[ReportRow]) -> dict[str | None, ReportRow]:
    return {row.group: row for row in rows}


def check_totals(row: ReportRow, pdd_tolerance_ms: float = 1e-6) -> None:
    assert row.attempts == 7
    assert row.answered == 2
    assert row.asr == pytest.approx(2 / 7)
    assert row.acd_seconds == pytest.approx((30 + 60) / 2)  # billsec: 30 and round(60.2) = 60
    assert row.ner == pytest.approx(5 / 7)  # answered 2 + busy + no_answer + rejected
    assert row.mean_pdd_ms == pytest.approx(
        (500 + 1500 + 2000 + 1000 + 500 + 250) / 6, abs=pdd_tolerance_ms
    )
    assert row.billsec_total == 90
    assert row.dispositions == {
        "answered": 2,
        "busy": 1,
        "no_answer": 1,
        "cancelled": 1,
        "rejected": 1,
        "failed": 0,
        "congestion": 1,
    }
    assert row.hangup_reasons == {"normal": 3, "user_hangup": 2, "timer_expired": 1, "error": 1}


def check_by_trunk(rows: list[ReportRow], pdd_tolerance_ms: float = 1e-6) -> None:
    groups = by_group(rows)
    assert list(groups) == ["t1", "t2"]
    t1, t2 = groups["t1"], groups["t2"]
    assert (t1.attempts, t1.answered, t1.acd_seconds) == (4, 1, 30.0)
    assert t1.ner == pytest.approx(1.0)
    assert t1.mean_pdd_ms == pytest.approx((500 + 1500 + 2000 + 250) / 4, abs=pdd_tolerance_ms)
    assert (t2.attempts, t2.answered, t2.acd_seconds) == (3, 1, 60.0)
    assert t2.ner == pytest.approx(1 / 3)
    assert t2.mean_pdd_ms == pytest.approx(750.0, abs=pdd_tolerance_ms)


def check_periods(hours: list[ReportRow], days: list[ReportRow]) -> None:
    assert [(row.group, row.attempts) for row in hours] == [
        ("2024-05-01T10:00Z", 2),
        ("2024-05-01T11:00Z", 2),
        ("2024-05-02T09:00Z", 2),
        ("2024-05-02T23:00Z", 1),
    ]
    assert [(row.group, row.attempts, row.answered) for row in days] == [
        ("2024-05-01", 4, 1),
        ("2024-05-02", 3, 1),
    ]


def test_report_figures(repository: Repository, make_cdr: Callable[..., CdrRecord]) -> None:
    seed(repository, make_cdr)
    engine = repository.engine
    [total] = build_report(engine)
    assert total.group is None
    check_totals(total)
    check_by_trunk(build_report(engine, by="trunk"))
    check_periods(build_report(engine, by="hour"), build_report(engine, by="day"))
    scenarios = by_group(build_report(engine, by="scenario"))
    assert {name: row.attempts for name, row in scenarios.items()} == {
        "callback": 2,
        "campaign": 4,
        "manual": 1,
    }


def test_report_time_range_is_half_open(
    repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    seed(repository, make_cdr)
    day2 = datetime.fromtimestamp(DAY2, UTC)
    [later] = build_report(repository.engine, since=day2)
    [earlier] = build_report(repository.engine, until=day2)
    assert (later.attempts, earlier.attempts) == (3, 4)
    [empty] = build_report(repository.engine, since=datetime(2030, 1, 1, tzinfo=UTC))
    assert (empty.attempts, empty.asr, empty.acd_seconds, empty.mean_pdd_ms) == (
        0,
        None,
        None,
        None,
    )


def test_views_agree_with_the_report(
    repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    seed(repository, make_cdr)
    with repository.engine.connect() as connection:

        def view(name: str, by: str | None) -> list[ReportRow]:
            order = "" if by is None else " ORDER BY 1"
            result = connection.execute(text(f"SELECT * FROM {name}{order}")).mappings()
            return [row_from_mapping(row, by) for row in result]

        [total] = view("cdr_report_total", None)
        check_totals(total)
        check_by_trunk(view("cdr_report_by_trunk", "trunk"))
        check_periods(view("cdr_report_by_hour", "hour"), view("cdr_report_by_day", "day"))
        for name, by in [("cdr_report_by_scenario", "scenario"), ("cdr_report_by_day", "day")]:
            assert view(name, by) == build_report(connection, by=by)


def test_report_on_sqlite_matches(
    sqlite_repository: Repository, make_cdr: Callable[..., CdrRecord]
) -> None:
    seed(sqlite_repository, make_cdr)
    engine = sqlite_repository.engine
    [total] = build_report(engine)
    # SQLite measures PDD through julianday(), a double of days: about 0.05 ms of rounding.
    check_totals(total, pdd_tolerance_ms=0.1)
    check_by_trunk(build_report(engine, by="trunk"), pdd_tolerance_ms=0.1)
    check_periods(build_report(engine, by="hour"), build_report(engine, by="day"))


def run_report(url: URL, *args: str) -> str:
    database = url.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["report", "--database-url", database, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_report_command_formats(
    repository: Repository, migrated_database_url: URL, make_cdr: Callable[..., CdrRecord]
) -> None:
    seed(repository, make_cdr)
    document = json.loads(run_report(migrated_database_url, "--by", "trunk", "--format", "json"))
    assert document["by"] == "trunk"
    assert [row["group"] for row in document["rows"]] == ["t1", "t2"]
    assert document["rows"][1]["acd_seconds"] == 60.0
    assert document["rows"][0]["dispositions"]["busy"] == 1

    out = run_report(migrated_database_url, "--since", "2024-05-02", "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert len(parsed) == 1
    assert parsed[0]["attempts"] == "3"
    assert parsed[0]["hangup_user_hangup"] == "2"

    table = run_report(migrated_database_url, "--by", "day", "--until", "2024-05-02T00:00Z")
    lines = table.splitlines()
    assert lines[0].split() == [
        "day",
        "attempts",
        "answered",
        "ASR",
        "ACD",
        "s",
        "NER",
        "PDD",
        "ms",
    ]
    assert lines[2].split()[:4] == ["2024-05-01", "4", "1", "25.0%"]
    assert "per disposition" in table and "per hangup_reason" in table


def test_report_command_rejects_bad_input(migrated_database_url: URL) -> None:
    database = migrated_database_url.render_as_string(hide_password=False)
    runner = CliRunner()
    bad_time = runner.invoke(main, ["report", "--database-url", database, "--since", "yesterday"])
    assert bad_time.exit_code == 2
    assert "cannot read time 'yesterday'" in bad_time.output
    backwards = runner.invoke(
        main,
        ["report", "--database-url", database, "--since", "2024-05-02", "--until", "2024-05-01"],
    )
    assert backwards.exit_code == 2
    assert "later than --since" in backwards.output
    unreachable = runner.invoke(
        main, ["report", "--database-url", "postgresql://nobody@127.0.0.1:1/none"]
    )
    assert unreachable.exit_code == 1
    assert "cannot reach the database" in unreachable.output
