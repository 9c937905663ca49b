"""Header names and values: compact forms, lookup keys (a bounded cache), comma lists, tags
and branches, CSeq (RFC 3261 §7.3, §20)."""

from __future__ import annotations

from sipstack._abnf import (
    _BRANCH_PARAM_RE,
    _CSEQ_RE,
    _LIST_ELEMENT_RE,
    _QUOTED_RE,
    _TAG_PARAM_RE,
    _TOKEN_RE,
    MAX_CSEQ,
)
from sipstack.errors import SipParseError

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
