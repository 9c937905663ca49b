"""sipstack: a sans-IO SIP user agent client core (bytes and `now` in, bytes and deadlines out)."""

from sipstack.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sipstack.message import Request, Response, make_response, parse_message

__all__ = [
    "LocalProtocolError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "SipParseError",
    "make_response",
    "parse_message",
]
