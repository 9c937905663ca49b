"""Via values (RFC 3261 §20.42, rport RFC 3581): sent-protocol, sent-by and parameters."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache

from sipstack.errors import SipParseError
from sipstack.headers._syntax import (
    PARSE_CACHE_SIZE,
    TOKEN_RE,
    parse_params,
    render_params,
    shorten,
)
from sipstack.headers.split import first_header_value, split_header_values
from sipstack.transport import Address, Transport
from sipstack.uri import Param, find_param, format_hostport, parse_host, parse_port, set_param

_HEADER = "Via"
_VIA_RE = re.compile(
    r"[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[^\]]*\]|[^ \t:;\[\],]+)(?:[ \t]*:[ \t]*([^ \t;]*))?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via hop. transport is the upper-case token (UDP, TCP, TLS, or others a peer uses)."""

    transport: str
    host: str  # IPv6 without brackets
    port: int | None = None
    params: tuple[Param, ...] = ()

    @classmethod
    def build(
        cls, transport: Transport, host: str, port: int | None, branch: str, *, rport: bool = True
    ) -> Via:
        """The Via a UAC puts on a new request: `SIP/2.0/UDP host:port;branch=...;rport`."""
        params: tuple[Param, ...] = (
            (("branch", branch), ("rport", None)) if rport else (("branch", branch),)
        )
        return cls(transport=transport.value.upper(), host=host, port=port, params=params)

    @classmethod
    def parse(cls, text: str) -> Via:
        return _parse_via(text)

    @classmethod
    def _build(cls, text: str) -> Via:
        match = _VIA_RE.match(text)
        if match is None:
            raise SipParseError(
                f"{_HEADER}: expected 'SIP/2.0/<transport> host[:port]' in {shorten(text, 60)}"
            )
        transport, host_text, port_text = match.groups()
        host = parse_host(host_text, _HEADER)
        port = None if port_text is None else parse_port(port_text, _HEADER)
        rest = text.rstrip()
        params = parse_params(rest, match.end(), _HEADER) if match.end() < len(rest) else ()
        if params:
            _check_params(params)
        return cls(transport=transport.upper(), host=host, port=port, params=params)

    @classmethod
    def parse_all(cls, value: str) -> list[Via]:
        """Every hop of a comma-joined Via value, topmost first."""
        try:
            elements = split_header_values(value)
        except SipParseError as exc:
            raise SipParseError(f"{_HEADER}: {exc}") from None
        if not elements:
            raise SipParseError(f"{_HEADER}: empty value")
        return [cls.parse(element) for element in elements]

    @classmethod
    def parse_first(cls, value: str) -> Via:
        """The topmost hop of a comma-joined value, without parsing the others."""
        try:
            return cls.parse(first_header_value(value))
        except SipParseError as exc:
            if exc.args[0].startswith(_HEADER):
                raise
            raise SipParseError(f"{_HEADER}: {exc}") from None

    def param(self, name: str) -> str | None:
        found = find_param(self.params, name)
        return None if found is None else found[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name) is not None

    def with_param(self, name: str, value: str | None = None) -> Via:
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.param("ttl")
        return None if value is None else int(value)

    @property
    def has_rport(self) -> bool:
        """True when rport is present, as a bare flag (request) or with a value (response)."""
        return self.has_param("rport")

    @property
    def rport(self) -> int | None:
        """The port filled in by the server (RFC 3581), None for the bare flag or when absent."""
        value = self.param("rport")
        return None if not value else int(value)

    @property
    def sent_by(self) -> Address:
        """(host, port) as written; the port defaults by transport (5061 for TLS, else 5060)."""
        if self.port is not None:
            return (self.host, self.port)
        return (self.host, 5061 if self.transport == "TLS" else 5060)

    def render(self) -> str:
        head = f"SIP/2.0/{self.transport} {format_hostport(self.host, self.port)}"
        return head + render_params(self.params) if self.params else head

    def __str__(self) -> str:
        return self.render()


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_via(text: str) -> Via:
    return Via._build(text)


def _check_params(params: tuple[Param, ...]) -> None:
    """Validate the parameters whose values the stack reads (RFC 3261 §20.42, RFC 3581)."""
    for name, value in params:
        key = name.lower()
        if key == "branch":
            if not value or TOKEN_RE.fullmatch(value) is None:
                raise SipParseError(f"{_HEADER}: branch {shorten(value or '', 40)} is not a token")
        elif key == "rport":
            if value:
                parse_port(value, f"{_HEADER} rport")
        elif key == "ttl":
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 3:
                raise SipParseError(f"{_HEADER}: ttl {shorten(value or '', 20)} is not 0..255")
            if int(value) > 255:
                raise SipParseError(f"{_HEADER}: ttl {value} is not 0..255")
        elif key in ("received", "maddr"):
            if not value:
                raise SipParseError(f"{_HEADER}: {name} parameter without a value")
            parse_host(value, f"{_HEADER} {name}")
