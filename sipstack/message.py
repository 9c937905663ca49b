"""SIP requests and responses: parsing bytes into messages and rendering them back (RFC 3261 §7)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import cast

from sipstack.errors import SipParseError

SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**31 - 1
MAX_DELTA_SECONDS = 2**32 - 1
MAX_MAX_FORWARDS = 255

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

# Headers whose values contain commas that do not separate values (RFC 3261 §7.3.1), or that
# carry exactly one value whatever they contain: headers_all() does not split them.
_UNSPLITTABLE = frozenset(
    {
        "authentication-info",
        "authorization",
        "call-id",
        "content-length",
        "content-type",
        "cseq",
        "date",
        "expires",
        "from",
        "identity",
        "max-forwards",
        "min-expires",
        "organization",
        "priority",
        "proxy-authenticate",
        "proxy-authorization",
        "retry-after",
        "server",
        "subject",
        "timestamp",
        "to",
        "user-agent",
        "www-authenticate",
    }
)

_REQUIRED = ("via", "from", "to", "call-id", "cseq")
# Headers that may appear once; Content-Length may repeat only with the same value.
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards")

# The patterns below use possessive quantifiers (*+, ++, ?+): the grammar never needs to give
# characters back, and keeping no backtracking points makes them faster and immune to
# catastrophic backtracking on hostile input. Values are matched as received, so the patterns
# allow the spaces around them.
_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = f"[{_TOKEN_CHARS}]++"
_TOKEN_RE = re.compile(_TOKEN)
# quoted-string; a quoted-pair may escape any character but CR and LF (lines hold neither).
_QUOTED = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_QUOTED_RE = re.compile(_QUOTED)
_PARAM_RUN = r'[^ \t;,"<>]++'  # an unquoted parameter value: token, host, IPv6 reference...


def _params(captured: str | None = None) -> str:
    """Pattern for `;name[=value]` parameters; the value of `captured` becomes a named group."""
    generic = rf"{_TOKEN}(?:[ \t]*+=[ \t]*+(?:{_QUOTED}|{_PARAM_RUN}))?+"
    if captured is not None:
        generic = rf"(?:(?i:{captured})[ \t]*+=[ \t]*+(?P<{captured}>{_PARAM_RUN})|{generic})"
    return rf"(?:[ \t]*+;[ \t]*+{generic})*+"


# A display-name word: a token, or (being liberal) non-ASCII letters some peers send unquoted.
_DISPLAY_WORD = f"[{_TOKEN_CHARS}\u0080-\U0010ffff]++"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*+"
# From/To (RFC 3261 §20.20): name-addr or addr-spec, then ;params (the tag captured). A URI
# written without <...> cannot hold ';', ',' or '?' (§20.10); no URI holds spaces or quotes.
_NAME_ADDR_RE = re.compile(
    rf"[ \t]*+(?:(?:{_QUOTED}|{_DISPLAY_WORD}(?:[ \t]++{_DISPLAY_WORD})*+)?+[ \t]*+<[^<> \t\"]++>"
    rf"|{_SCHEME}:[^ \t;,<>\"?]++){_params('tag')}[ \t]*+"
)
_HOST = r"(?:\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9._\-]++)"
# via-parm (RFC 3261 §20.42): sent-protocol LWS sent-by *(;param); the top one's branch captured.
_VIA_PARM = (
    rf"{_TOKEN}[ \t]*+/[ \t]*+{_TOKEN}[ \t]*+/[ \t]*+{_TOKEN}[ \t]++{_HOST}"
    rf"(?:[ \t]*+:[ \t]*+[0-9]{{1,5}}+)?+"
)
_VIA_RE = re.compile(
    rf"[ \t]*+{_VIA_PARM}{_params('branch')}(?:[ \t]*+,[ \t]*+{_VIA_PARM}{_params()})*+[ \t]*+"
)
_CSEQ_RE = re.compile(rf"[ \t]*+([0-9]++)[ \t]++({_TOKEN})[ \t]*+")
# Request-Line (RFC 3261 §7.1). Liberal in the spaces between the parts and after the version
# (RFC 4475 §3.1.2.9 lwsstart, §3.1.2.10 trws); the URI may not hold spaces, <, > or quotes.
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) ++({_SCHEME}:[!#-;=?-~]++) ++[Ss][Ii][Pp]/2\.0[ \t]*+")
_LEADING_NUMBER_RE = re.compile(r"[ \t]*+([0-9]++)")
_TAG_PARAM_RE = re.compile(rf";[ \t]*+tag[ \t]*+=[ \t]*+({_PARAM_RUN})", re.IGNORECASE)
_BRANCH_PARAM_RE = re.compile(rf";[ \t]*+branch[ \t]*+=[ \t]*+({_PARAM_RUN})", re.IGNORECASE)
# One element of a comma list: quoted strings and <...> are taken whole, commas inside them kept.
_LIST_ELEMENT_RE = re.compile(r'(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"?+|<[^>]*+>?+|[^,"<\\]++|\\)++')
_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_LINE_END_RE = re.compile(r"\r?\n")

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


# Header names as written (valid tokens only) -> lookup key. Peers and our own code use a small
# set of spellings, so this saves a lower() and a validation per header line. It is bounded so
# that a peer inventing names cannot grow it without end, and seeded so that the usual
# spellings are always in it.
_KEY_OF_NAME: dict[str, str] = {}
_KEY_CACHE_SIZE = 4096
_COMMON_NAMES = """
Via Max-Forwards Route Record-Route From To Call-ID CSeq Contact Content-Type Content-Length
Allow Supported Require User-Agent Server Session-Expires Min-SE Reason P-Asserted-Identity
Privacy History-Info Diversion Identity Authorization WWW-Authenticate Proxy-Authorization
Proxy-Authenticate Accept Date Expires Subject Allow-Events Event Refer-To Referred-By
Timestamp Warning Retry-After Organization Content-Disposition Call-Id Cseq Content-type
v f t i m l c k x s
"""


def _key_of_valid_name(name: str) -> str | None:
    """The lookup key of `name` when it is a valid header name as written, else None."""
    key = _KEY_OF_NAME.get(name)
    if key is not None:
        return key
    if _TOKEN_RE.fullmatch(name) is None:
        return None
    key = canonical_name(name)
    if len(_KEY_OF_NAME) < _KEY_CACHE_SIZE:
        _KEY_OF_NAME[name] = key
    return key


for _name in _COMMON_NAMES.split():
    _key_of_valid_name(_name)


def _key_of(name: str) -> str:
    """The lookup key of a name a caller asks for (any spelling)."""
    return _KEY_OF_NAME.get(name) or canonical_name(name)


def split_values(value: str) -> list[str]:
    """Split a comma-joined header value, respecting quoted strings and <...> (RFC 3261 §7.3.1).

    Elements are stripped of spaces and tabs; empty elements are dropped.
    """
    if "," not in value:
        stripped = value.strip(" \t")
        return [stripped] if stripped else []
    quoted = '"' in value or "<" in value
    elements = _LIST_ELEMENT_RE.findall(value) if quoted else value.split(",")
    return [element for element in (part.strip(" \t") for part in elements) if element]


def _header_params_start(value: str) -> int:
    """Where a From/To/Contact value's own parameters may begin (after the URI's '>')."""
    less = value.find("<")
    if less < 0:
        return 0  # addr-spec: every ';' belongs to the header (RFC 3261 §20.10)
    quote = value.find('"', 0, less)
    if quote >= 0:  # a quoted display name may itself hold '<' or '>'
        match = _QUOTED_RE.match(value, quote)
        if match is not None:
            less = value.find("<", match.end())
            if less < 0:
                return len(value)
    greater = value.find(">", less)
    return len(value) if greater < 0 else greater + 1


def _tag_of(value: str) -> str | None:
    """The tag parameter of a From/To value (a ';tag' inside <...> belongs to the URI)."""
    match = _TAG_PARAM_RE.search(value, _header_params_start(value))
    return match.group(1) if match else None


def _branch_of(via: str) -> str | None:
    """The branch parameter of the first via-parm of a Via value."""
    if "," in via:
        elements = split_values(via)
        via = elements[0] if elements else ""
    match = _BRANCH_PARAM_RE.search(via)
    return match.group(1) if match else None


def _check_header_text(name: str, value: str) -> None:
    if _key_of_valid_name(name) is None:
        raise ValueError(f"invalid SIP header name {name!r}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"header {name} value contains a line break or NUL")


def _parse_uint(text: str, maximum: int, what: str) -> int:
    """A decimal integer 0..maximum in ASCII digits (spaces around allowed); else SipParseError."""
    digits = text.strip(" \t")
    if not (digits.isascii() and digits.isdigit()):
        raise SipParseError(f"{what} {_show(digits)} is not a non-negative integer")
    # int() refuses more than 4300 digits: check the size before converting.
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(maximum)) or int(significant) > maximum:
        raise SipParseError(f"{what} {_show(digits)} is larger than {maximum}")
    return int(significant)


# Methods whose CSeq can skip the regex (any token is valid; these are the usual ones).
_COMMON_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "PRACK", "INFO", "REFER", "NOTIFY")
)


def parse_cseq(value: str | None) -> tuple[int, str]:
    """(number, method) of a CSeq value (RFC 3261 §20.16); number at most 2**31-1."""
    if value is None:
        raise SipParseError("missing CSeq header")
    number, _, method = value.strip(" \t").partition(" ")
    if method in _COMMON_METHODS and len(number) <= 9 and number.isdigit() and number.isascii():
        return int(number), method
    match = _CSEQ_RE.fullmatch(value)
    if match is None:
        shown = _show(value.strip(" \t"))
        raise SipParseError(f"CSeq {shown} is not '<number> <method>'")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 10 or int(digits) > MAX_CSEQ:
        raise SipParseError(f"CSeq number {_show(match.group(1))} is larger than 2**31-1")
    return int(digits), match.group(2)


def _show(text: str, limit: int = 60) -> str:
    """A value quoted for an error message, cut short so a huge value cannot flood logs."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


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
        lines = [self.start_line()]
        append = lines.append
        known = _KEY_OF_NAME.get
        for name, value in self.headers:
            key = known(name) or _key_of_valid_name(name)
            if key is None:
                raise ValueError(f"invalid SIP header name {name!r}")
            if key != "content-length":
                append(f"{name}: {value}")
        append(f"Content-Length: {len(self.body)}\r\n\r\n")
        text = "\r\n".join(lines)
        breaks = len(lines) + 1
        if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
            raise ValueError(self._unrenderable_reason())
        try:
            return text.encode() + self.body
        except UnicodeEncodeError:
            raise ValueError(self._unrenderable_reason()) from None

    def _unrenderable_reason(self) -> str:
        for name, value in self.headers:
            if "\r" in value or "\n" in value or "\x00" in value:
                return f"header {name} value contains a line break or NUL"
            try:
                value.encode()
            except UnicodeEncodeError:
                return f"header {name} value cannot be encoded as UTF-8"
        return "the start line contains a line break, NUL or text that is not UTF-8"

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


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


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
