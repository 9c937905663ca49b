"""name-addr / addr-spec values (From, To, Contact, Route, Record-Route, PAI, Refer-To, ...)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Self

from sipstack.errors import SipParseError
from sipstack.headers._syntax import (
    PARSE_CACHE_SIZE,
    has_control,
    parse_params,
    quote,
    read_quoted,
    render_params,
    shorten,
    skip_whitespace,
)
from sipstack.headers.split import split_header_values
from sipstack.uri import Param, SipUri, TelUri, drop_params, find_param, parse_uri, set_param


def parse_name_addr(text: str, header: str) -> tuple[SipUri | TelUri, str, tuple[Param, ...]]:
    """(uri, display name, header params) of one name-addr or addr-spec value."""
    text = text.strip()
    if not text:
        raise SipParseError(f"{header}: empty value")
    display = ""
    first = text[0]
    if first == "<":
        open_at = 0
    elif first == '"':
        display, pos = read_quoted(text, 0, header)
        if has_control(display):
            raise SipParseError(f"{header}: control character in display name")
        open_at = skip_whitespace(text, pos)
        if open_at >= len(text) or text[open_at] != "<":
            raise SipParseError(f"{header}: quoted display name must be followed by <URI>")
    else:
        open_at = text.find("<")
        if open_at < 0:
            return _parse_addr_spec(text, header)
        display = text[:open_at].strip()
        if '"' in display or ">" in display or has_control(display):
            raise SipParseError(f"{header}: invalid display name {shorten(display, 40)}")
    close_at = text.find(">", open_at + 1)
    if close_at < 0:
        raise SipParseError(f"{header}: missing '>' after the URI")
    try:
        uri = parse_uri(text[open_at + 1 : close_at])
    except SipParseError as exc:
        raise SipParseError(f"{header}: {exc}") from None
    return uri, display, parse_params(text, close_at + 1, header)


_parse_cached = lru_cache(maxsize=PARSE_CACHE_SIZE)(parse_name_addr)


def _parse_addr_spec(text: str, header: str) -> tuple[SipUri | TelUri, str, tuple[Param, ...]]:
    # Without <>, everything after the first ';' is a header parameter (RFC 3261 §20.10).
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi]
    try:
        uri = parse_uri(uri_text)
    except SipParseError as exc:
        raise SipParseError(f"{header}: {exc}") from None
    return uri, "", () if semi < 0 else parse_params(text, semi, header)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """`"Display" <uri>;param=value`. Always rendered with <> (valid for every URI)."""

    uri: SipUri | TelUri
    display_name: str = ""  # unescaped; UTF-8 text kept as str; "" for none
    params: tuple[Param, ...] = ()  # header params after the URI; quoted values keep quotes

    HEADER: ClassVar[str] = "name-addr"

    @classmethod
    def parse(cls, text: str, header: str | None = None) -> Self:
        """One value; `header` names the header in error messages."""
        name = header or cls.HEADER
        uri, display, params = _parse_cached(text, name)
        return cls._checked(cls(uri, display, params), name)

    @classmethod
    def parse_all(cls, value: str, header: str | None = None) -> list[Self]:
        """Every element of a comma-joined header value (Route, Record-Route, Contact, ...)."""
        name = header or cls.HEADER
        try:
            elements = split_header_values(value)
        except SipParseError as exc:
            raise SipParseError(f"{name}: {exc}") from None
        if not elements:
            raise SipParseError(f"{name}: empty value")
        return [cls.parse(element, name) for element in elements]

    @classmethod
    def _checked(cls, value: Self, header: str) -> Self:
        """Subclasses validate their own parameters here."""
        return value

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def param(self, name: str) -> str | None:
        """Value of header parameter `name` (case-insensitive); None when absent or a flag."""
        found = find_param(self.params, name)
        return None if found is None else found[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name) is not None

    def with_param(self, name: str, value: str | None = None) -> Self:
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def with_tag(self, tag: str) -> Self:
        return self.with_param("tag", tag)

    def without_params(self, *names: str) -> Self:
        return dataclasses.replace(self, params=drop_params(self.params, names))

    def render(self) -> str:
        uri = self.uri.render()
        head = f"{quote(self.display_name)} <{uri}>" if self.display_name else f"<{uri}>"
        return head + render_params(self.params) if self.params else head

    def __str__(self) -> str:
        return self.render()
