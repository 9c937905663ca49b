"""History-Info (RFC 7044) entries and Diversion (RFC 5806) values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryInfoEntry:
    uri: str
    index: str
    display_name: str = ""
    reason: str = ""  # a Reason header value, embedded escaped as ?Reason=
    rc: str = ""
    mp: str = ""
    np: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Diversion:
    uri: str
    display_name: str = ""
    reason: str = "unknown"
    counter: int | None = None
    limit: int | None = None
    privacy: str = ""
    screen: str = ""
