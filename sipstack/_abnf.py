"""The RFC 3261 §25 grammar the parser needs, as compiled patterns and limits (h11's _abnf)."""

from __future__ import annotations

import re

SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**31 - 1
MAX_DELTA_SECONDS = 2**32 - 1
MAX_MAX_FORWARDS = 255

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
