"""Render report rows as an aligned text table, CSV or JSON (what `outbound report` prints)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from models.reporting import ReportRow
from sipstack.cdr import Disposition, HangupReason

FORMATS = ("table", "csv", "json")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _figures(row: ReportRow) -> dict[str, Any]:
    """The row's own figures, before its disposition and hangup-reason counts."""
    return {
        "group": row.group,
        "attempts": row.attempts,
        "answered": row.answered,
        "asr": row.asr,
        "acd_seconds": row.acd_seconds,
        "ner": row.ner,
        "mean_pdd_ms": row.mean_pdd_ms,
        "billsec_total": row.billsec_total,
    }


def _flat(row: ReportRow) -> dict[str, Any]:
    flat = _figures(row)
    flat.update({f"disposition_{key}": value for key, value in row.dispositions.items()})
    flat.update({f"hangup_{key}": value for key, value in row.hangup_reasons.items()})
    return flat


def _aligned(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [len(header) for header in headers]
    for line in lines:
        widths = [max(width, len(cell)) for width, cell in zip(widths, line, strict=True)]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(headers), rule, *(render(line) for line in lines)])


def render_table(rows: Sequence[ReportRow], by: str | None) -> str:
    label = by or "scope"
    names = [row.group if row.group is not None else "all" for row in rows]
    kpis = _aligned(
        [label, "attempts", "answered", "ASR", "ACD s", "NER", "PDD ms"],
        [
            [
                name,
                str(row.attempts),
                str(row.answered),
                _percent(row.asr),
                _number(row.acd_seconds),
                _percent(row.ner),
                _number(row.mean_pdd_ms, 0),
            ]
            for name, row in zip(names, rows, strict=True)
        ],
    )
    dispositions = _aligned(
        [label, *(value.value for value in Disposition)],
        [
            [name, *(str(row.dispositions[value.value]) for value in Disposition)]
            for name, row in zip(names, rows, strict=True)
        ],
    )
    reasons = _aligned(
        [label, *(value.value for value in HangupReason)],
        [
            [name, *(str(row.hangup_reasons[value.value]) for value in HangupReason)]
            for name, row in zip(names, rows, strict=True)
        ],
    )
    return (
        f"{kpis}\n\nper disposition\n{dispositions}\n\nper hangup_reason\n{reasons}\n"
        if rows
        else "no CDRs in the range\n"
    )


def render_csv(rows: Sequence[ReportRow]) -> str:
    buffer = io.StringIO()
    flats = [_flat(row) for row in rows]
    fieldnames = list(_flat(ReportRow(None, 0, 0, None, None, None, None, 0, *_empty())))
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flats)
    return buffer.getvalue()


def _empty() -> tuple[dict[str, int], dict[str, int]]:
    return (
        {value.value: 0 for value in Disposition},
        {value.value: 0 for value in HangupReason},
    )


def render_json(
    rows: Sequence[ReportRow], *, by: str | None, since: datetime | None, until: datetime | None
) -> str:
    document = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "by": by,
        "rows": [
            {
                **_figures(row),
                "dispositions": row.dispositions,
                "hangup_reasons": row.hangup_reasons,
            }
            for row in rows
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def render(
    rows: Sequence[ReportRow],
    fmt: str,
    *,
    by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> str:
    if fmt == "table":
        return render_table(rows, by)
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "json":
        return render_json(rows, by=by, since=since, until=until)
    raise ValueError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
