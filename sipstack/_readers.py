"""Bytes to a Request or Response (RFC 3261 §7): the fast path, and the slow one that names the
line a problem is on."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import cast

from sipstack._abnf import (
    _BLANK_LINE_RE,
    _LEADING_NUMBER_RE,
    _LINE_END_RE,
    _NAME_ADDR_RE,
    _REQUEST_LINE_RE,
    _TOKEN_RE,
    _VIA_RE,
    MAX_DELTA_SECONDS,
    MAX_MAX_FORWARDS,
    SIP_VERSION,
)
from sipstack._headers import (
    _KEY_OF_NAME,
    _REQUIRED,
    _SINGLE,
    _key_of_valid_name,
    _parse_uint,
    _show,
    canonical_name,
    parse_cseq,
)
from sipstack._model import Message, Request, Response
from sipstack.errors import SipParseError


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep a hostile peer from making us allocate or loop without end."""

    max_message_bytes: int = 65_535
    max_headers: int = 256
    max_line_length: int = 8_192


DEFAULT_LIMITS = ParseLimits()


def parse_message(data: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message (a datagram, or one message cut from a stream by the framer).

    Raises SipParseError, naming what is wrong and where (line number, header), for anything
    that is not a valid message; never any other exception.
    """
    size = len(data)
    if size > limits.max_message_bytes:
        raise SipParseError(f"message of {size} bytes exceeds the {limits.max_message_bytes} limit")
    first_line = 1
    if data[:1] in (b"\r", b"\n"):
        # RFC 3261 §7.5: empty lines before the start line are ignored.
        stripped = data.lstrip(b"\r\n")
        first_line += data.count(b"\n", 0, size - len(stripped))
        data = stripped
    end = data.find(b"\r\n\r\n")
    if end > 0:
        body_start = end + 4
        try:
            text = data[:end].decode()
        except UnicodeDecodeError as exc:
            raise _not_utf8(data, exc, first_line) from None
        lines = text.split("\r\n")
        breaks = len(lines) - 1
        if text.count("\n") != breaks or text.count("\r") != breaks:
            body_start, text, lines = _split_head_slowly(data, first_line)
    else:
        body_start, text, lines = _split_head_slowly(data, first_line)
    if "\x00" in text:
        number = first_line + text.count("\n", 0, text.index("\x00"))
        raise SipParseError(f"line {number}: NUL byte in the header section")
    if len(text) > limits.max_line_length:
        _check_line_lengths(lines, first_line, limits)
    if len(lines) > limits.max_headers:
        _check_header_count(lines, limits)

    start = lines[0]
    if start[11:12] == " " and start.startswith("SIP/2.0 "):  # the usual status line
        code_text = start[8:11]
        if not (code_text.isascii() and code_text.isdigit() and "1" <= code_text[0] <= "6"):
            raise SipParseError(f"line {first_line}: status code {_show(code_text)} not 100-699")
        response = Response.__new__(Response)
        response.status_code = int(code_text)
        response.reason = start[12:]
        message: Request | Response = response
    else:
        message = _parse_start_line(start, first_line)
    message._headers = None

    # The hot loop: each line's lookup key from the cache of known names, and the first value
    # of each key. Anything unusual (folding, new spellings, bad lines) takes the careful path.
    found: dict[str | None, str] = {}
    add_first = found.setdefault
    known = _KEY_OF_NAME.get
    for line in islice(lines, 1, None):
        name, colon, rest = line.partition(":")
        add_first(known(name) if colon else None, rest)
    if None in found:
        message._lines, keys, first = _parse_fields_slowly(lines, first_line)
        message._keys = keys
        header_count = len(keys)
    else:
        first = cast(dict[str, str], found)
        message._lines = lines
        message._keys = None
        header_count = len(lines) - 1
    message._first = first
    _check_fields(message, first, header_count, lines, first_line)

    body = data[body_start:]
    length_text = first.get("content-length")
    if length_text is not None:
        digits = length_text.strip(" \t")
        if (
            len(first) == header_count
            and len(digits) < 10
            and digits.isdigit()
            and digits.isascii()
        ):
            length = int(digits)
        else:
            length = _content_length(message, digits, lines, first_line)
        if length > len(body):
            raise _field_error(
                lines,
                first_line,
                "content-length",
                f"{length} is larger than the {len(body)} bytes after the headers",
            )
        if length < len(body):
            body = body[:length]  # e.g. a second message in the datagram (RFC 4475 dblreq)
    # Without Content-Length the body is the rest of the datagram (RFC 3261 §18.3, UDP).
    message.body = body
    return message


def _not_utf8(data: bytes, error: UnicodeDecodeError, first_line: int) -> SipParseError:
    line = first_line + data.count(b"\n", 0, error.start)
    return SipParseError(f"line {line}: header bytes are not UTF-8 (byte {error.start})")


def _split_head_slowly(data: bytes, first_line: int) -> tuple[int, str, list[str]]:
    """Body start, header text and lines when lines end in bare LF (RFC 3261 §7.5 tolerance)."""
    blank = _BLANK_LINE_RE.search(data)
    if blank is None:
        raise SipParseError("message has no empty line ending its headers")
    try:
        text = data[: blank.start()].decode()
    except UnicodeDecodeError as exc:
        raise _not_utf8(data, exc, first_line) from None
    lines = _LINE_END_RE.split(text)
    for number, line in enumerate(lines, start=first_line):
        if "\r" in line:
            raise SipParseError(f"line {number}: carriage return not followed by line feed")
    return blank.end(), text, lines


def _check_line_lengths(lines: list[str], first_line: int, limits: ParseLimits) -> None:
    for number, line in enumerate(lines, start=first_line):
        if len(line) > limits.max_line_length:
            raise SipParseError(
                f"line {number}: {len(line)} characters exceed the "
                f"{limits.max_line_length}-character line limit"
            )


def _check_header_count(lines: list[str], limits: ParseLimits) -> None:
    count = sum(1 for line in islice(lines, 1, None) if line[:1] not in (" ", "\t"))
    if count > limits.max_headers:
        raise SipParseError(f"{count} header fields exceed the {limits.max_headers}-header limit")


def _parse_start_line(line: str, number: int) -> Request | Response:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"line {number}: unsupported SIP version {_show(version)}")
        code_text, _, reason = rest.partition(" ")
        if len(code_text) != 3 or not (code_text.isascii() and code_text.isdigit()):
            raise SipParseError(f"line {number}: status code {_show(code_text)} is not 3 digits")
        code = int(code_text)
        if not 100 <= code <= 699:
            raise SipParseError(f"line {number}: status code {code} is outside 100-699")
        response = Response.__new__(Response)
        response.status_code = code
        response.reason = reason
        return response
    match = _REQUEST_LINE_RE.fullmatch(line)
    if match is None:
        raise SipParseError(f"line {number}: {_request_line_problem(line)}")
    request = Request.__new__(Request)
    request.method, request.uri = match.groups()
    return request


def _request_line_problem(line: str) -> str:
    parts = line.split()
    if len(parts) != 3:
        return f"request line {_show(line)} is not 'METHOD URI SIP/2.0'"
    method, uri, version = parts
    if version.upper() != SIP_VERSION:
        return f"unsupported SIP version {_show(version)} in the request line"
    if _TOKEN_RE.fullmatch(method) is None:
        return f"request method {_show(method)} is not a token"
    if not line.startswith(method + " "):
        return f"request line {_show(line)} does not start with the method and a space"
    if "\t" in line.rstrip(" \t"):
        return f"request line {_show(line)} separates its parts with tabs"
    return f"request URI {_show(uri)} is not an absolute URI without <>, quotes or spaces"


def _parse_fields_slowly(
    lines: list[str], first_line: int
) -> tuple[list[str], list[str], dict[str, str]]:
    """Header fields line by line: unfolds continuation lines and names each bad line.

    Returns the lines rewritten one 'Name:value' per header (start line first), their lookup
    keys, and the first value of each key.
    """
    names: list[str] = []
    values: list[str] = []
    keys: list[str] = []
    for number, line in enumerate(islice(lines, 1, None), start=first_line + 1):
        if line[:1] in (" ", "\t"):
            # RFC 3261 §7.3.1: a line starting with whitespace continues the previous value.
            if not names:
                raise SipParseError(f"line {number}: continuation line before any header")
            continued = line.strip(" \t")
            if continued:
                values[-1] = f"{values[-1]} {continued}" if values[-1] else continued
            continue
        name, colon, rest = line.partition(":")
        if not colon:
            raise SipParseError(f"line {number}: {_show(line)} is not a 'Name: value' header")
        name = name.rstrip(" \t")
        key = _key_of_valid_name(name)
        if key is None:
            raise SipParseError(f"line {number}: header name {_show(name)} is not a token")
        names.append(name)
        values.append(rest.strip(" \t"))
        keys.append(key)
    first: dict[str, str] = {}
    for key, value in zip(keys, values, strict=True):
        first.setdefault(key, value)
    rewritten = [lines[0], *(f"{name}:{value}" for name, value in zip(names, values, strict=True))]
    return rewritten, keys, first


def _line_of(lines: list[str], first_line: int, key: str, occurrence: int = 0) -> int:
    """The line number where the `occurrence`-th header with this key starts (for errors)."""
    seen = 0
    for number, line in enumerate(islice(lines, 1, None), start=first_line + 1):
        if line[:1] in (" ", "\t"):
            continue
        if canonical_name(line.partition(":")[0]) == key:
            if seen == occurrence:
                return number
            seen += 1
    return first_line


def _field_error(
    lines: list[str], first_line: int, key: str, problem: str, occurrence: int = 0
) -> SipParseError:
    number = _line_of(lines, first_line, key, occurrence)
    return SipParseError(f"line {number} ({_display_name(key)}): {problem}")


def _display_name(key: str) -> str:
    special = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate"}
    return special.get(key) or "-".join(part.capitalize() for part in key.split("-"))


_name_addr_match = _NAME_ADDR_RE.fullmatch
_via_match = _VIA_RE.fullmatch


def _check_fields(
    message: Request | Response,
    first: dict[str, str],
    header_count: int,
    lines: list[str],
    first_line: int,
) -> None:
    """The headers every message needs (RFC 3261 §8.1.1), each well formed and not repeated.

    From, To and Via are checked against their grammar; the tags and the top branch the
    matches capture are kept, so reading them later costs nothing.
    """
    try:
        raw_call_id = first["call-id"]
        raw_cseq = first["cseq"]
        raw_from = first["from"]
        raw_to = first["to"]
        raw_via = first["via"]
    except KeyError:
        missing = [_display_name(key) for key in _REQUIRED if key not in first]
        raise SipParseError(f"missing required header(s): {', '.join(missing)}") from None
    repeated = len(first) != header_count
    keys = message._key_list() if repeated else []
    if repeated:
        for key in _SINGLE:
            if keys.count(key) > 1:
                raise _field_error(lines, first_line, key, "header appears more than once", 1)
    if not raw_call_id.strip(" \t"):
        raise _field_error(lines, first_line, "call-id", "empty value")
    if not raw_call_id.isascii():
        # RFC 3261 §25.1: callid = word ["@" word], words of ASCII characters only.
        problem = f"{_show(raw_call_id.strip())} has a non-ASCII character"
        raise _field_error(lines, first_line, "call-id", problem)

    try:
        number_method = parse_cseq(raw_cseq)
    except SipParseError as exc:
        raise _field_error(lines, first_line, "cseq", str(exc)) from None
    message._cseq = (raw_cseq, number_method)
    if isinstance(message, Request) and number_method[1] != message.method:
        problem = f"method {number_method[1]!r} does not match the request's {message.method!r}"
        raise _field_error(lines, first_line, "cseq", problem)

    from_match = _name_addr_match(raw_from)
    if from_match is None:
        problem = f"{_show(raw_from.strip())} is not a valid name-addr or addr-spec"
        raise _field_error(lines, first_line, "from", problem)
    to_match = _name_addr_match(raw_to)
    if to_match is None:
        problem = f"{_show(raw_to.strip())} is not a valid name-addr or addr-spec"
        raise _field_error(lines, first_line, "to", problem)
    via_match = _via_match(raw_via)
    if via_match is None:
        raise _field_error(lines, first_line, "via", f"{_show(raw_via.strip())} is not valid")
    if repeated and keys.count("via") > 1:
        for occurrence, value in enumerate(message._values("via")):
            if _via_match(value) is None:
                problem = f"{_show(value)} is not valid"
                raise _field_error(lines, first_line, "via", problem, occurrence)
    message._tags = (
        raw_from,
        from_match["tag"],
        raw_to,
        to_match["tag"],
        raw_via,
        via_match["branch"],
    )

    max_forwards = first.get("max-forwards")
    if max_forwards is not None:
        try:
            _parse_uint(max_forwards, MAX_MAX_FORWARDS, "value")
        except SipParseError as exc:
            raise _field_error(lines, first_line, "max-forwards", str(exc)) from None
    retry_after = first.get("retry-after")
    if retry_after is not None:
        # The one scalar a UAC acts on in a failure response (RFC 4475 §3.1.2.5 scalarlg).
        number = _LEADING_NUMBER_RE.match(retry_after)
        try:
            if number is None:
                text = retry_after.strip(" \t")
                raise SipParseError(f"{_show(text)} does not start with delta-seconds")
            _parse_uint(number.group(1), MAX_DELTA_SECONDS, "delta-seconds")
        except SipParseError as exc:
            raise _field_error(lines, first_line, "retry-after", str(exc)) from None


def _content_length(message: Message, digits: str, lines: list[str], first_line: int) -> int:
    """The Content-Length value, checked: repeated only with one value, a sane integer."""
    values = set(message._values("content-length"))
    if len(values) > 1:
        problem = f"conflicting values {sorted(values)!r}"
        raise _field_error(lines, first_line, "content-length", problem, 1)
    try:
        return _parse_uint(digits, MAX_DELTA_SECONDS, "value")
    except SipParseError as exc:
        raise _field_error(lines, first_line, "content-length", str(exc)) from None
