"""The two error kinds of the stack: our own misuse versus a misbehaving peer."""

from __future__ import annotations


class SipParseError(ValueError):
    """Bytes from the network that are not a valid SIP message (or header value)."""


class LocalProtocolError(RuntimeError):
    """Our code asked the stack to do something SIP does not allow (a bug or a bad request)."""


class RemoteProtocolError(ValueError):
    """The peer sent a well-formed message that breaks the protocol at this point."""


class UnknownLegError(LocalProtocolError):
    """No leg with this Call-ID exists (never dialled, or already torn down)."""
