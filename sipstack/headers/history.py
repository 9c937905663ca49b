"""History-Info (RFC 7044) entries and Diversion (RFC 5806) values."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.headers._syntax import has_control, shorten, token_or_quoted, unquote_value
from sipstack.headers.name_addr import NameAddr
from sipstack.headers.split import split_header_values
from sipstack.uri import Param, SipUri, TelUri, parse_uri

_HISTORY = "History-Info"
_DIVERSION = "Diversion"
_INDEX_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_COUNTER_RE = re.compile(r"[0-9]{1,2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryInfoEntry:
    uri: str
    index: str
    display_name: str = ""
    reason: str = ""  # a Reason header value, embedded escaped as ?Reason=
    rc: str = ""
    mp: str = ""
    np: str = ""

    @classmethod
    def parse(cls, text: str) -> HistoryInfoEntry:
        """One hi-entry; the embedded ?Reason= is taken out of the URI into `reason`."""
        value = NameAddr.parse(text, _HISTORY)
        uri = value.uri
        reason = ""
        if isinstance(uri, SipUri) and uri.headers:
            kept = tuple(h for h in uri.headers if h[0].lower() != "reason")
            if len(kept) != len(uri.headers):
                reason = uri.header("Reason") or ""
                uri = uri.replace(headers=kept)
        fields: dict[str, str] = {}
        for name, param_value in value.params:
            key = name.lower()
            if key in ("index", "rc", "mp", "np"):
                fields[key] = _check_index(param_value, name)
        if "index" not in fields:
            raise SipParseError(f"{_HISTORY}: entry without index parameter")
        return cls(
            uri=uri.render(),
            display_name=value.display_name,
            reason=reason,
            index=fields["index"],
            rc=fields.get("rc", ""),
            mp=fields.get("mp", ""),
            np=fields.get("np", ""),
        )

    def render(self) -> str:
        """`"Name" <sip:uri?Reason=SIP%3Bcause%3D302>;index=1.1;rc=1`."""
        uri = _parse_entry_uri(self.uri, _HISTORY)
        if self.reason:
            if not isinstance(uri, SipUri):
                raise SipParseError(f"{_HISTORY}: a Reason can only be embedded in a sip/sips URI")
            uri = uri.with_header("Reason", self.reason)
        params: list[Param] = [("index", _check_index(self.index, "index"))]
        for name, param_value in (("rc", self.rc), ("mp", self.mp), ("np", self.np)):
            if param_value:
                params.append((name, _check_index(param_value, name)))
        return NameAddr(uri=uri, display_name=self.display_name, params=tuple(params)).render()

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True, slots=True, kw_only=True)
class Diversion:
    uri: str
    display_name: str = ""
    reason: str = "unknown"
    counter: int | None = None
    limit: int | None = None
    privacy: str = ""
    screen: str = ""

    @classmethod
    def parse(cls, text: str) -> Diversion:
        """One Diversion value; a missing reason parses as "" (extension params are dropped)."""
        value = NameAddr.parse(text, _DIVERSION)
        fields: dict[str, str] = {}
        for name, param_value in value.params:
            key = name.lower()
            if key in ("reason", "counter", "limit", "privacy", "screen"):
                if not param_value:
                    raise SipParseError(f"{_DIVERSION}: {name} parameter without a value")
                unquoted = unquote_value(param_value)
                if has_control(unquoted):
                    raise SipParseError(f"{_DIVERSION}: control character in {name}")
                fields[key] = unquoted
        return cls(
            uri=value.uri.render(),
            display_name=value.display_name,
            reason=fields.get("reason", ""),
            counter=_parse_counter(fields.get("counter"), "counter"),
            limit=_parse_counter(fields.get("limit"), "limit"),
            privacy=fields.get("privacy", ""),
            screen=fields.get("screen", ""),
        )

    def render(self) -> str:
        """`"Name" <sip:uri>;reason=user-busy;counter=1;limit=3;privacy=off;screen=no`."""
        uri = _parse_entry_uri(self.uri, _DIVERSION)
        params: list[Param] = []
        if self.reason:
            params.append(("reason", token_or_quoted(self.reason)))
        for name, number in (("counter", self.counter), ("limit", self.limit)):
            if number is not None:
                if not 0 <= number <= 99:
                    raise SipParseError(f"{_DIVERSION}: {name} {number} is not 0..99")
                params.append((name, str(number)))
        if self.privacy:
            params.append(("privacy", token_or_quoted(self.privacy)))
        if self.screen:
            params.append(("screen", token_or_quoted(self.screen)))
        return NameAddr(uri=uri, display_name=self.display_name, params=tuple(params)).render()

    def __str__(self) -> str:
        return self.render()


def parse_history_info(value: str) -> list[HistoryInfoEntry]:
    """Every entry of a comma-joined History-Info value."""
    return [HistoryInfoEntry.parse(element) for element in _elements(value, _HISTORY)]


def render_history_info(entries: tuple[HistoryInfoEntry, ...] | list[HistoryInfoEntry]) -> str:
    return ", ".join(entry.render() for entry in entries)


def parse_diversion(value: str) -> list[Diversion]:
    """Every value of a comma-joined Diversion header."""
    return [Diversion.parse(element) for element in _elements(value, _DIVERSION)]


def render_diversion(values: tuple[Diversion, ...] | list[Diversion]) -> str:
    return ", ".join(value.render() for value in values)


def _elements(value: str, header: str) -> list[str]:
    try:
        elements = split_header_values(value)
    except SipParseError as exc:
        raise SipParseError(f"{header}: {exc}") from None
    if not elements:
        raise SipParseError(f"{header}: empty value")
    return elements


def _parse_entry_uri(text: str, header: str) -> SipUri | TelUri:
    try:
        return parse_uri(text)
    except SipParseError as exc:
        raise SipParseError(f"{header}: {exc}") from None


def _check_index(value: str | None, name: str) -> str:
    if value is None or _INDEX_RE.fullmatch(value) is None:
        raise SipParseError(
            f"{_HISTORY}: {name} {shorten(value or '', 30)} is not an index like 1.2.1"
        )
    return value


def _parse_counter(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if _COUNTER_RE.fullmatch(value) is None:
        raise SipParseError(f"{_DIVERSION}: {name} {shorten(value, 20)} is not 0..99")
    return int(value)
