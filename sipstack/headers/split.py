"""Split a comma-joined header value into its elements, respecting quotes and <...>."""

from __future__ import annotations

import re
from collections.abc import Iterator

from sipstack.errors import SipParseError

_SPECIAL_RE = re.compile(r"[\",<]")
_QUOTED_TAIL_RE = re.compile(r"(?:[^\"\\]|\\.)*\"", re.DOTALL)


def split_header_values(value: str) -> list[str]:
    """Elements of a comma list (RFC 3261 §7.3.1), stripped, empty elements dropped.

    Commas inside quoted strings and inside <...> do not split. Only for headers whose grammar
    is a comma list: not for Date, nor for the comma-separated auth-params of WWW-Authenticate.
    """
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    elements: list[str] = []
    start = 0
    for end in _element_ends(value):
        element = value[start:end].strip()
        if element:
            elements.append(element)
        start = end + 1
    return elements


def first_header_value(value: str) -> str:
    """The first element of a comma list (for the topmost Via, say), without splitting the rest."""
    if "," not in value:
        return value.strip()
    start = 0
    for end in _element_ends(value):
        element = value[start:end].strip()
        if element:
            return element
        start = end + 1
    return ""


def _element_ends(value: str) -> Iterator[int]:
    """Indexes of the top-level commas, then len(value) as the last end."""
    pos = 0
    search = _SPECIAL_RE.search
    while True:
        match = search(value, pos)
        if match is None:
            break
        char = match.group()
        if char == ",":
            yield match.start()
            pos = match.end()
        elif char == '"':
            closing = _QUOTED_TAIL_RE.match(value, match.end())
            if closing is None:
                raise SipParseError(f"unterminated quoted string in header value {value[:60]!r}")
            pos = closing.end()
        else:
            close = value.find(">", match.end())
            if close < 0:
                raise SipParseError(f"unclosed '<' in header value {value[:60]!r}")
            pos = close + 1
    yield len(value)
