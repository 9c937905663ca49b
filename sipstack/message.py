"""SIP requests and responses: parsing bytes into messages and rendering them back (RFC 3261 §7)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sipstack.errors import SipParseError

SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**31 - 1

COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose values contain commas that do not separate values (RFC 3261 §7.3.1).
_UNSPLITTABLE = frozenset(
    {
        "www-authenticate",
        "authorization",
        "proxy-authenticate",
        "proxy-authorization",
        "authentication-info",
        "date",
        "identity",
        "retry-after",
        "subject",
        "user-agent",
        "server",
        "call-id",
        "cseq",
        "content-length",
        "content-type",
        "max-forwards",
    }
)

_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_TAG_PARAM = re.compile(r";\s*tag\s*=\s*([^;,\s>]+)", re.IGNORECASE)
_BRANCH_PARAM = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep a hostile peer from making us allocate or loop without end."""

    max_message_bytes: int = 65_535
    max_headers: int = 256
    max_line_length: int = 8_192


DEFAULT_LIMITS = ParseLimits()


def canonical_name(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded ('i' -> 'call-id')."""
    key = name.strip().lower()
    if len(key) == 1:
        return COMPACT_FORMS.get(key, key)
    return key


def split_values(value: str) -> list[str]:
    """Split a comma-joined header value, respecting quoted strings and <...> (RFC 3261 §7.3.1)."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    values: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for position, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            part = value[start:position].strip()
            if part:
                values.append(part)
            start = position + 1
    part = value[start:].strip()
    if part:
        values.append(part)
    return values


def _tag_of(value: str | None) -> str | None:
    if value is None:
        return None
    # Parameters after '>' belong to the header; inside <...> they belong to the URI.
    close = value.rfind(">")
    match = _TAG_PARAM.search(value, close + 1 if close >= 0 else 0)
    return match.group(1) if match else None


def _check_header_text(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid SIP header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} value contains a line break")


class Message:
    """What requests and responses share: an ordered header list and a body."""

    __slots__ = ("_index", "body", "headers")

    def __init__(self, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.headers: list[tuple[str, str]] = headers if headers is not None else []
        self.body = body
        self._index: dict[str, list[str]] | None = None

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self.headers:
                key = canonical_name(name)
                found = index.get(key)
                if found is None:
                    index[key] = [value]
                else:
                    found.append(value)
            self._index = index
        return index

    def header(self, name: str) -> str | None:
        """The first field value of a header (as written, commas and all), or None."""
        values = self._lookup().get(canonical_name(name))
        return values[0] if values else None

    def headers_all(self, name: str) -> list[str]:
        """Every value of a header across its lines, comma-joined values split."""
        key = canonical_name(name)
        values = self._lookup().get(key)
        if not values:
            return []
        if key in _UNSPLITTABLE:
            return list(values)
        result: list[str] = []
        for value in values:
            result.extend(split_values(value))
        return result

    def has_header(self, name: str) -> bool:
        return canonical_name(name) in self._lookup()

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        _check_header_text(name, value)
        if first:
            self.headers.insert(0, (name, value))
        else:
            self.headers.append((name, value))
        self._index = None

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of this header with one, where the first one stood."""
        _check_header_text(name, value)
        key = canonical_name(name)
        kept: list[tuple[str, str]] = []
        placed = False
        for existing in self.headers:
            if canonical_name(existing[0]) == key:
                if not placed:
                    kept.append((name, value))
                    placed = True
            else:
                kept.append(existing)
        if not placed:
            kept.append((name, value))
        self.headers = kept
        self._index = None

    def remove_header(self, name: str) -> int:
        key = canonical_name(name)
        before = len(self.headers)
        self.headers = [h for h in self.headers if canonical_name(h[0]) != key]
        self._index = None
        return before - len(self.headers)

    @property
    def call_id(self) -> str | None:
        return self.header("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; SipParseError when missing or malformed."""
        return parse_cseq(self.header("cseq"))

    @property
    def via_branch(self) -> str | None:
        top = self.header("via")
        if top is None:
            return None
        comma = top.find(",")
        if comma >= 0:
            top = split_values(top)[0]
        match = _BRANCH_PARAM.search(top)
        return match.group(1) if match else None

    @property
    def from_tag(self) -> str | None:
        return _tag_of(self.header("from"))

    @property
    def to_tag(self) -> str | None:
        return _tag_of(self.header("to"))

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Render the message; Content-Length is always written, and always right."""
        lines = [self.start_line()]
        for name, value in self.headers:
            lowered = name.lower()
            if lowered != "content-length" and lowered != "l":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode() + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def _comparable_headers(self) -> list[tuple[str, str]]:
        keyed = ((canonical_name(name), value) for name, value in self.headers)
        return [(key, value) for key, value in keyed if key != "content-length"]

    def _same_content(self, other: Message) -> bool:
        return (
            self._comparable_headers() == other._comparable_headers() and self.body == other.body
        )


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.method == other.method and self.uri == other.uri and self._same_content(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


class Response(Message):
    __slots__ = ("reason", "status_code")

    def __init__(
        self,
        status_code: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status_code = status_code
        self.reason = REASON_PHRASES.get(status_code, "Unknown") if reason is None else reason

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status_code} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status_code == other.status_code
            and self.reason == other.reason
            and self._same_content(other)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason} call-id={self.call_id!r}>"


def parse_cseq(value: str | None) -> tuple[int, str]:
    if value is None:
        raise SipParseError("missing CSeq header")
    number_text, _, method = value.strip().partition(" ")
    method = method.strip()
    if not number_text.isdigit() or not number_text.isascii():
        raise SipParseError(f"CSeq number {number_text!r} is not a non-negative integer")
    number = int(number_text)
    if number > MAX_CSEQ:
        raise SipParseError(f"CSeq number {number} is larger than 2**31-1")
    if not method or not _TOKEN.fullmatch(method):
        raise SipParseError(f"CSeq method {method!r} is not a token")
    return number, method


def make_response(
    request: Request,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` (RFC 3261 §8.2.6): Via, From, To (+ tag), Call-ID, CSeq copied."""
    copied: list[tuple[str, str]] = []
    for name, value in request.headers:
        key = canonical_name(name)
        if key == "via":
            copied.append(("Via", value))
        elif key == "to":
            if to_tag is not None and _tag_of(value) is None:
                value = f"{value};tag={to_tag}"
            copied.append(("To", value))
        elif key == "from":
            copied.append(("From", value))
        elif key == "call-id":
            copied.append(("Call-ID", value))
        elif key == "cseq":
            copied.append(("CSeq", value))
    copied.extend(headers)
    return Response(status_code, reason, copied, body)


def _decode_head(head: bytes) -> str:
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        raise SipParseError(
            f"message headers are not UTF-8 (byte {exc.start}, line {line})"
        ) from None


def _parse_start_line(line: str) -> Request | Response:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if parts[0] != SIP_VERSION:
            raise SipParseError(f"unsupported SIP version {parts[0]!r} in status line")
        if len(parts) < 2:
            raise SipParseError(f"status line {line!r} has no status code")
        code_text = parts[1]
        if len(code_text) != 3 or not code_text.isdigit() or not code_text.isascii():
            raise SipParseError(f"status code {code_text!r} is not three digits")
        code = int(code_text)
        if not 100 <= code <= 699:
            raise SipParseError(f"status code {code} is outside 100-699")
        return Response(code, parts[2] if len(parts) == 3 else "", [])
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"request line {line[:80]!r} is not 'METHOD URI SIP/2.0'")
    method, uri, version = parts
    if not _TOKEN.fullmatch(method):
        raise SipParseError(f"request method {method!r} is not a token")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported SIP version {version!r} in request line")
    colon = uri.find(":")
    if colon <= 0 or not uri[:colon].isalpha() or any(c in uri for c in "<>\"\t"):
        raise SipParseError(f"request URI {uri!r} is not an absolute URI")
    return Request(method, uri, [])


def parse_message(data: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message (a datagram, or one message cut from a stream by the framer).

    Raises SipParseError, naming what is wrong and where, for anything that is not a valid
    message; never any other exception.
    """
    if len(data) > limits.max_message_bytes:
        raise SipParseError(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: empty lines before the start line are ignored
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head_bytes, body = data[:end], data[end + 4 :]
        eol = "\r\n"
    else:
        end = data.find(b"\n\n")
        if end < 0:
            raise SipParseError("message has no empty line ending its headers")
        head_bytes, body = data[:end], data[end + 2 :]
        eol = "\n"
    lines = _decode_head(head_bytes).split(eol)
    start = lines[0]
    if len(start) > limits.max_line_length:
        raise SipParseError(f"start line longer than {limits.max_line_length} characters")
    message = _parse_start_line(start.rstrip("\r"))
    message.headers = _parse_header_lines(lines, limits)
    _validate(message)
    message.body = _take_body(message, body)
    return message


def _parse_header_lines(lines: list[str], limits: ParseLimits) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) > limits.max_line_length:
            raise SipParseError(f"line {number} longer than {limits.max_line_length} characters")
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError(f"line {number}: continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise SipParseError(f"line {number}: {line[:60]!r} is not a 'Name: value' header")
        headers.append((name, value.strip()))
        if len(headers) > limits.max_headers:
            raise SipParseError(f"more than {limits.max_headers} headers")
    return headers


def _validate(message: Request | Response) -> None:
    index = message._lookup()
    for key in _REQUIRED:
        if key not in index:
            raise SipParseError(f"missing required header {key.title()}")
    for key in ("call-id", "cseq", "from", "to"):
        if len(index[key]) > 1:
            raise SipParseError(f"header {key.title()} appears more than once")
    if not index["call-id"][0]:
        raise SipParseError("Call-ID header is empty")
    number_method = parse_cseq(index["cseq"][0])
    if isinstance(message, Request) and number_method[1] != message.method:
        raise SipParseError(
            f"CSeq method {number_method[1]!r} does not match request method {message.method!r}"
        )
    max_forwards = index.get("max-forwards")
    if max_forwards is not None:
        text = max_forwards[0]
        if not (text.isdigit() and text.isascii() and int(text) <= 255):
            raise SipParseError(f"Max-Forwards {text!r} is not an integer 0-255")


def _take_body(message: Message, body: bytes) -> bytes:
    lengths = message._lookup().get("content-length")
    if lengths is None:
        return body
    if len(set(lengths)) > 1:
        raise SipParseError(f"conflicting Content-Length headers {lengths!r}")
    text = lengths[0]
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"Content-Length {text!r} is not a non-negative integer")
    length = int(text)
    if length > len(body):
        raise SipParseError(f"Content-Length {length} is larger than the {len(body)}-byte body")
    return body[:length]
