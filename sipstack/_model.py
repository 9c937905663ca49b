"""The message model: Message, Request, Response, and make_response (RFC 3261 §7, §8.2.6)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from sipstack._abnf import _TOKEN_RE, SIP_VERSION
from sipstack._headers import (
    _UNSPLITTABLE,
    _branch_of,
    _check_header_text,
    _key_of,
    _tag_of,
    canonical_name,
    parse_cseq,
    split_values,
)
from sipstack._writers import render_message
from sipstack.errors import SipParseError

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


class Message:
    """What requests and responses share: an ordered header list and a body.

    `headers` is the list of (name as written, value) pairs in wire order. Change it through
    add_header/set_header/remove_header (or assign a new list): the lookup index is rebuilt
    when the list is replaced or its length changes, not when an entry is swapped in place.
    A parsed message builds that list only when it is first asked for; lookups use an index.
    """

    __slots__ = ("_cseq", "_first", "_headers", "_keys", "_lines", "_tags", "body")

    def __init__(self, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self._headers: list[tuple[str, str]] | None = headers if headers is not None else []
        # A parsed message keeps its header section as lines (the start line first, then one
        # 'Name:value' line per header) until the header list is asked for.
        self._lines: list[str] | None = None
        self._keys: list[str] | None = None  # lookup key of each header, built when needed
        self._first: dict[str, str] | None = None  # key -> value (unstripped) of its first line
        self._cseq: tuple[str, tuple[int, str]] | None = None  # (raw value, parsed)
        # Set by the parser: (From value, its tag, To value, its tag, top Via value, branch).
        self._tags: tuple[str, str | None, str, str | None, str, str | None] | None = None
        self.body = body

    @property
    def headers(self) -> list[tuple[str, str]]:
        headers = self._headers
        if headers is None:
            lines = self._lines
            assert lines is not None
            self._key_list()  # the keys of the lines are the keys of the list made from them
            fields = (line.partition(":") for line in islice(lines, 1, None))
            headers = [(name, rest.strip(" \t")) for name, _, rest in fields]
            self._headers = headers
            self._lines = None
        return headers

    @headers.setter
    def headers(self, headers: list[tuple[str, str]]) -> None:
        self._headers = headers
        self._lines = None
        self._keys = None
        self._first = None

    def _key_list(self) -> list[str]:
        """The lookup key of each header, in order."""
        keys = self._keys
        if keys is None:
            lines = self._lines
            if lines is not None:
                keys = [_key_of(line.partition(":")[0]) for line in islice(lines, 1, None)]
            else:
                keys = [_key_of(name) for name, _ in self.headers]
            self._keys = keys
        return keys

    def _index(self) -> dict[str, str]:
        """Key -> first value; rebuilt when the header list was replaced or changed length."""
        first = self._first
        headers = self._headers
        if first is not None and (headers is None or len(self._key_list()) == len(headers)):
            return first
        headers = self.headers
        keys = [_key_of(name) for name, _ in headers]
        first = {}
        for key, (_, value) in zip(keys, headers, strict=True):
            first.setdefault(key, value)
        self._keys = keys
        self._first = first
        return first

    def _values(self, key: str) -> list[str]:
        """Every value (stripped) of the lines with this lookup key, in order."""
        self._index()
        keys = self._key_list()
        lines = self._lines
        if lines is not None:
            pairs = zip(keys, islice(lines, 1, None), strict=True)
            return [line.partition(":")[2].strip(" \t") for k, line in pairs if k == key]
        return [header[1] for k, header in zip(keys, self.headers, strict=True) if k == key]

    def _lookup(self) -> dict[str, str]:
        """The index; a parsed message whose header list was never handed out needs no check."""
        first = self._first
        if first is None or self._headers is not None:
            return self._index()
        return first

    def _value(self, key: str) -> str | None:
        value = self._lookup().get(key)
        return None if value is None else value.strip(" \t")

    def header(self, name: str) -> str | None:
        """The first field value of a header (as written, commas and all), or None."""
        return self._value(_key_of(name))

    def headers_all(self, name: str) -> list[str]:
        """Every value of a header across its lines, comma-joined values split."""
        key = _key_of(name)
        if key not in self._index():
            return []
        values = self._values(key)
        if key in _UNSPLITTABLE:
            return values
        result: list[str] = []
        for value in values:
            result.extend(split_values(value))
        return result

    def has_header(self, name: str) -> bool:
        return _key_of(name) in self._index()

    def add_header(self, name: str, value: str, first: bool = False) -> None:
        _check_header_text(name, value)
        if first:
            self.headers.insert(0, (name, value))
        else:
            self.headers.append((name, value))
        self._first = None

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

    def remove_header(self, name: str) -> int:
        """Remove every line of this header; return how many were removed."""
        key = canonical_name(name)
        before = self.headers
        self.headers = [h for h in before if canonical_name(h[0]) != key]
        return len(before) - len(self.headers)

    @property
    def call_id(self) -> str | None:
        return self._value("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; SipParseError when missing or malformed."""
        first = self._first
        if first is None or self._headers is not None:
            first = self._index()
        raw = first.get("cseq")
        if raw is None:
            raise SipParseError("missing CSeq header")
        memo = self._cseq
        if memo is not None and memo[0] is raw:
            return memo[1]
        parsed = parse_cseq(raw)
        self._cseq = (raw, parsed)
        return parsed

    @property
    def via_branch(self) -> str | None:
        """The branch parameter of the topmost Via, or None."""
        return self._tag_or_branch("via", 4)

    @property
    def from_tag(self) -> str | None:
        return self._tag_or_branch("from", 0)

    @property
    def to_tag(self) -> str | None:
        return self._tag_or_branch("to", 2)

    def _tag_or_branch(self, key: str, slot: int) -> str | None:
        first = self._first
        if first is None or self._headers is not None:
            first = self._index()
        raw = first.get(key)
        if raw is None:
            return None
        tags = self._tags
        if tags is not None and tags[slot] is raw:  # what the parser read from this very value
            return tags[slot + 1]
        return _branch_of(raw) if key == "via" else _tag_of(raw)

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Render the message; Content-Length is always written, and always right.

        Raises ValueError when a header name is not a token or a value holds CR, LF or NUL
        (rendering them would inject lines or produce bytes our parser rejects).
        """
        return render_message(self.start_line(), self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def _comparable_headers(self) -> list[tuple[str, str]]:
        self._index()
        keys = self._key_list()
        pairs = zip(keys, self.headers, strict=True)
        return [(key, header[1]) for key, header in pairs if key != "content-length"]

    def _same_content(self, other: Message) -> bool:
        return self._comparable_headers() == other._comparable_headers() and self.body == other.body


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
        if _TOKEN_RE.fullmatch(self.method) is None:
            raise ValueError(f"request method {self.method!r} is not a token")
        uri = self.uri
        if not uri or " " in uri or "\t" in uri:
            raise ValueError(f"request URI {uri!r} is empty or contains whitespace")
        return f"{self.method} {uri} {SIP_VERSION}"

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
        code = self.status_code
        if type(code) is not int or not 100 <= code <= 699:
            raise ValueError(f"status code {code!r} is not an integer 100-699")
        return f"{SIP_VERSION} {code} {self.reason}"

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
