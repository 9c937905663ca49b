"""A message to bytes (RFC 3261 §7): Content-Length always written and right, nothing that
would inject a line."""

from __future__ import annotations

from sipstack._headers import _KEY_OF_NAME, _key_of_valid_name


def render_message(start_line: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The bytes of a message; Content-Length is always written, and always right.

    Raises ValueError when a header name is not a token or a value holds CR, LF or NUL
    (rendering them would inject lines or produce bytes our parser rejects).
    """
    lines = [start_line]
    append = lines.append
    known = _KEY_OF_NAME.get
    for name, value in headers:
        key = known(name) or _key_of_valid_name(name)
        if key is None:
            raise ValueError(f"invalid SIP header name {name!r}")
        if key != "content-length":
            append(f"{name}: {value}")
    append(f"Content-Length: {len(body)}\r\n\r\n")
    text = "\r\n".join(lines)
    breaks = len(lines) + 1
    if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
        raise ValueError(_unrenderable_reason(headers))
    try:
        return text.encode() + body
    except UnicodeEncodeError:
        raise ValueError(_unrenderable_reason(headers)) from None


def _unrenderable_reason(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if "\r" in value or "\n" in value or "\x00" in value:
            return f"header {name} value contains a line break or NUL"
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"header {name} value cannot be encoded as UTF-8"
    return "the start line contains a line break, NUL or text that is not UTF-8"
