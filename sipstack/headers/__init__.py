"""Typed SIP header models: each has parse(text) (SipParseError on bad input) and render()."""

from sipstack.headers.asserted_identity import PAssertedIdentity
from sipstack.headers.contact import Contact
from sipstack.headers.cseq import MAX_CSEQ, CSeq
from sipstack.headers.history import (
    Diversion,
    HistoryInfoEntry,
    parse_diversion,
    parse_history_info,
    render_diversion,
    render_history_info,
)
from sipstack.headers.identity import Identity
from sipstack.headers.name_addr import NameAddr
from sipstack.headers.privacy import Privacy
from sipstack.headers.refer_to import ReferTo
from sipstack.headers.session_timer import MinSE, SessionExpires
from sipstack.headers.split import first_header_value, split_header_values
from sipstack.headers.via import Via

__all__ = [
    "MAX_CSEQ",
    "CSeq",
    "Contact",
    "Diversion",
    "HistoryInfoEntry",
    "Identity",
    "MinSE",
    "NameAddr",
    "PAssertedIdentity",
    "Privacy",
    "ReferTo",
    "SessionExpires",
    "Via",
    "first_header_value",
    "parse_diversion",
    "parse_history_info",
    "render_diversion",
    "render_history_info",
    "split_header_values",
]
