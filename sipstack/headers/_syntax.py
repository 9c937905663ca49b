"""Shared header syntax: tokens, quoted strings and `;name=value` parameter lists."""

from __future__ import annotations

import re

from sipstack.errors import SipParseError
from sipstack.uri import Param
from sipstack.uri import shorten as shorten  # re-exported for the header modules

TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
DIGITS_RE = re.compile(r"[0-9]+")
# One `;name[=value]` with the LWS RFC 3261 allows around ';' and '='. A value is a
# quoted-string (kept with its quotes) or a run of characters that cannot end a parameter;
# that run is wider than `token` so hosts such as IPv6 `received=` values fit.
_PARAM_RE = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"(?:[ \t]*=[ \t]*(\"(?:[^\"\\\r\n]|\\[^\r\n])*\"|[^ \t\r\n;,\"<>]*))?[ \t]*"
)
_TRAILING_WS_RE = re.compile(r"[ \t]*")
_QUOTED_RE = re.compile(r"\"((?:[^\"\\\r\n]|\\[^\r\n])*)\"")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_QUOTED_PAIR_RE = re.compile(r"[\"\\]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_DELTA_SECONDS = 2**32 - 1
# Parsed header values are immutable, and the same From, To, Via and URIs come back in every
# response of a transaction, so the hot-path parsers keep a bounded cache of recent results.
PARSE_CACHE_SIZE = 4096


def parse_params(text: str, pos: int, header: str) -> tuple[Param, ...]:
    """Parameters from text[pos:] (which must be empty or start with ';')."""
    end = len(text)
    if pos >= end:
        return ()
    params: list[Param] = []
    match_param = _PARAM_RE.match
    while pos < end:
        match = match_param(text, pos)
        if match is None:
            raise SipParseError(f"{header}: malformed parameter at {shorten(text[pos:], 40)}")
        params.append((match.group(1), match.group(2)))
        pos = match.end()
    return tuple(params)


def render_params(params: tuple[Param, ...]) -> str:
    """`;name=value;flag`; values are written as given (quoted-strings keep their quotes)."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def skip_whitespace(text: str, pos: int) -> int:
    match = _TRAILING_WS_RE.match(text, pos)
    return pos if match is None else match.end()


def read_quoted(text: str, pos: int, header: str) -> tuple[str, int]:
    """The unescaped content of the quoted-string starting at text[pos] and the index after it."""
    match = _QUOTED_RE.match(text, pos)
    if match is None:
        raise SipParseError(f"{header}: unterminated or invalid quoted string")
    content = match.group(1)
    if "\\" in content:
        content = _QUOTED_PAIR_RE.sub(r"\1", content)
    return content, match.end()


def quote(text: str) -> str:
    """text as a quoted-string; CR, LF and other controls (invalid on the wire) become spaces."""
    if _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub(" ", text)
    if _NEEDS_QUOTED_PAIR_RE.search(text):
        text = _NEEDS_QUOTED_PAIR_RE.sub(r"\\\g<0>", text)
    return f'"{text}"'


def unquote_value(value: str) -> str:
    """A parameter value without its surrounding quotes and quoted-pairs, if it is quoted."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return value


def token_or_quoted(value: str) -> str:
    """value unchanged if it is a token, else as a quoted-string."""
    return value if TOKEN_RE.fullmatch(value) else quote(value)


def has_control(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None


def parse_delta_seconds(text: str, header: str, field: str) -> int:
    """1*DIGIT up to 2**32-1 (RFC 3261 §25.1 delta-seconds)."""
    if DIGITS_RE.fullmatch(text) is None:
        raise SipParseError(f"{header}: {field} {shorten(text, 30)} is not a number of seconds")
    if len(text) > 10 or int(text) > MAX_DELTA_SECONDS:
        raise SipParseError(f"{header}: {field} {shorten(text, 30)} exceeds 2**32-1")
    return int(text)
