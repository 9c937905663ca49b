"""SIP requests and responses: parsing bytes into messages and rendering them back (RFC 3261 §7).

The facade over the parts, split as h11 splits its own: the grammar (`_abnf`), header names
and values (`_headers`), the model (`_model`), bytes in (`_readers`) and bytes out
(`_writers`). Import from here; the parts are private.
"""

from __future__ import annotations

from sipstack._abnf import MAX_CSEQ, MAX_DELTA_SECONDS, MAX_MAX_FORWARDS, SIP_VERSION
from sipstack._headers import (
    _KEY_CACHE_SIZE,
    _KEY_OF_NAME,
    COMPACT_FORMS,
    canonical_name,
    parse_cseq,
    split_values,
)
from sipstack._model import REASON_PHRASES, Message, Request, Response, make_response
from sipstack._readers import DEFAULT_LIMITS, ParseLimits, parse_message
from sipstack._writers import render_message

__all__ = [
    "COMPACT_FORMS",
    "DEFAULT_LIMITS",
    "MAX_CSEQ",
    "MAX_DELTA_SECONDS",
    "MAX_MAX_FORWARDS",
    "REASON_PHRASES",
    "SIP_VERSION",
    "_KEY_CACHE_SIZE",
    "_KEY_OF_NAME",
    "Message",
    "ParseLimits",
    "Request",
    "Response",
    "canonical_name",
    "make_response",
    "parse_cseq",
    "parse_message",
    "render_message",
    "split_values",
]
