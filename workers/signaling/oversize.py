"""Requests too big for UDP go over TCP (RFC 3261 §18.1.1), decided in the shell.

"If a request is within 200 bytes of the path MTU, or if it is larger than 1300 bytes and the
path MTU is unknown, the request MUST be sent using an RFC 2914 congestion controlled transport
protocol, such as TCP. If this causes a change in the transport protocol from the one indicated
in the top Via, the value in the top Via MUST be changed." The core builds every request for
the leg's transport; the shell moves a big one to TCP (same host and port) and rewrites its top
Via, and keeps everything else of that transaction (its CANCEL, the ACK of a failure, a
retransmission) on TCP too, found by the top Via branch: §17.1.1.3 and §9.1 send those where
the request went.
"""

from __future__ import annotations

import re

UDP_MAX_REQUEST = 1300  # bytes; the path MTU is unknown

_TOP_VIA = re.compile(
    rb"^(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*UDP[ \t]+([^;,\r\n]+)",
    re.IGNORECASE | re.MULTILINE,
)
_BRANCH = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*([^;, \t\r\n]+)", re.IGNORECASE)


def is_request(data: bytes) -> bool:
    return not data.startswith(b"SIP/")


def too_big_for_udp(data: bytes) -> bool:
    """A request (never a response: those follow the request's Via) over the UDP limit."""
    return len(data) > UDP_MAX_REQUEST and is_request(data)


def top_via_branch(data: bytes) -> bytes | None:
    """The branch of the top Via when that Via says UDP (the only ones we move)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _TOP_VIA.search(head)
    if match is None:
        return None
    line_end = head.find(b"\r\n", match.end())
    branch = _BRANCH.search(head, match.end(), len(head) if line_end < 0 else line_end)
    return branch.group(1) if branch is not None else None


def via_over_tcp(data: bytes, sent_by: str) -> bytes:
    """`data` with its top Via saying `SIP/2.0/TCP sent_by` instead of UDP and its sent-by
    (parameters kept). Content-Length is unchanged: only the header section changes."""
    head, separator, body = data.partition(b"\r\n\r\n")
    match = _TOP_VIA.search(head)
    if match is None:
        return data
    via = b"Via: SIP/2.0/TCP " + sent_by.encode("ascii")
    return head[:match.start()] + via + head[match.end():] + separator + body
