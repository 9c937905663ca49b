"""Cut a TCP/TLS byte stream into whole SIP messages by Content-Length (RFC 3261 §18.3)."""

from __future__ import annotations

import re

from sipstack.errors import SipParseError

DEFAULT_MAX_MESSAGE = 65_536

# The blank line ending the header section; RFC 3261 §7.5 asks us to accept bare LF too.
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_FOLDED_LINE = re.compile(rb"\r?\n[ \t]+")
_STATUS_LINE = re.compile(rb"^SIP/2\.0 [1-6][0-9][0-9](?: |\r?$)")
_REQUEST_LINE = re.compile(rb"^[A-Za-z0-9.!%*_+`'~-]+ \S+ SIP/2\.0\r?$")
_START_LINE_END = re.compile(rb"\r?\n")


class StreamFramingError(SipParseError):
    """The stream cannot be framed; `framed` holds the whole messages cut before the fault.

    Framing cannot resynchronise after a bad message, so the connection should be closed.
    """

    def __init__(self, message: str, framed: list[bytes]) -> None:
        super().__init__(message)
        self.framed = framed


class StreamFramer:
    """Feed stream bytes in any chunking; get each whole SIP message's bytes exactly once.

    CRLF keep-alives between messages (RFC 5626 §3.5.1 "\\r\\n\\r\\n" pings and "\\r\\n" pongs)
    are dropped; `pings_received` counts the double-CRLF pings so the owner can answer them.
    A message (header section plus body) larger than `max_message` is an error, which also
    bounds the bytes held while waiting for the rest of a message.
    """

    __slots__ = ("_broken", "_buffer", "_crlf_run", "_scan_from", "max_message", "pings_received")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        if max_message < 64:
            raise ValueError(f"max_message must be at least 64 bytes, got {max_message}")
        self.max_message = max_message
        self.pings_received = 0
        self._buffer = bytearray()
        self._scan_from = 0  # where the search for the blank line resumes
        self._crlf_run = 0  # bare line ends seen since the last message
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return the messages they complete, oldest first.

        Raises StreamFramingError (a SipParseError) when the stream is not SIP or a message has
        a missing, repeated-and-different, malformed or oversized Content-Length.
        """
        if self._broken is not None:
            raise StreamFramingError(f"stream already failed: {self._broken}", [])
        self._buffer += data
        framed: list[bytes] = []
        try:
            while self._buffer:
                self._skip_keepalives()
                message = self._next_message()
                if message is None:
                    break
                framed.append(message)
        except SipParseError as exc:
            self._broken = str(exc)
            self._buffer.clear()
            raise StreamFramingError(str(exc), framed) from None
        return framed

    def _skip_keepalives(self) -> None:
        buffer = self._buffer
        skipped = 0
        size = len(buffer)
        while skipped < size:
            byte = buffer[skipped]
            if byte == 0x0A:  # LF ends a keep-alive line
                self._crlf_run += 1
                if self._crlf_run == 2:
                    self.pings_received += 1
                    self._crlf_run = 0
                skipped += 1
            elif byte == 0x0D:
                if skipped + 1 == size:
                    break  # a CR at the end: wait to see whether an LF follows
                skipped += 1
            else:
                break
        if skipped:
            del buffer[:skipped]
            self._scan_from = 0

    def _next_message(self) -> bytes | None:
        buffer = self._buffer
        if not buffer or buffer[0] in (0x0D, 0x0A):
            return None
        self._crlf_run = 0
        match = _HEADER_END.search(buffer, max(0, self._scan_from - 3))
        if match is None:
            self._check_incomplete_head()
            self._scan_from = len(buffer)
            return None
        head_end = match.end()
        head = bytes(buffer[:head_end])
        self._check_start_line(head)
        body_length = _content_length(head)
        total = head_end + body_length
        if total > self.max_message:
            raise SipParseError(
                f"SIP message of {total} bytes (Content-Length {body_length}) exceeds the "
                f"{self.max_message}-byte limit"
            )
        if len(buffer) < total:
            self._scan_from = head_end  # the head is known; only the body is awaited
            return None
        message = bytes(buffer[:total])
        del buffer[:total]
        self._scan_from = 0
        return message

    def _check_incomplete_head(self) -> None:
        buffer = self._buffer
        line_end = _START_LINE_END.search(buffer, 0, 512)
        if line_end is not None:
            self._check_start_line(bytes(buffer[: line_end.end()]))
        elif len(buffer) >= 512:
            raise SipParseError(f"no SIP start line within 512 bytes: {_preview(buffer)}")
        if len(buffer) > self.max_message:
            raise SipParseError(f"SIP header section longer than the {self.max_message}-byte limit")

    @staticmethod
    def _check_start_line(head: bytes) -> None:
        line_end = _START_LINE_END.search(head)
        first_line = head[: line_end.end()] if line_end else head
        if _STATUS_LINE.match(first_line) or _REQUEST_LINE.match(first_line):
            return
        raise SipParseError(f"not a SIP start line: {_preview(first_line)}")


def _content_length(head: bytes) -> int:
    if b"\n " in head or b"\n\t" in head:
        head = _FOLDED_LINE.sub(b" ", head)
    values = {raw.strip() for raw in _CONTENT_LENGTH.findall(head)}
    if not values:
        raise SipParseError("SIP message on a stream transport has no Content-Length header")
    if len(values) > 1:
        shown = ", ".join(sorted(v.decode("latin-1") for v in values))
        raise SipParseError(f"conflicting Content-Length values: {shown}")
    (value,) = values
    if not value.isdigit() or len(value) > 9:
        raise SipParseError(f"bad Content-Length value {value.decode('latin-1')!r}")
    return int(value)


def _preview(data: bytes | bytearray) -> str:
    return repr(bytes(data[:60]))
