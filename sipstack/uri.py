"""SIP/SIPS (RFC 3261 §19.1) and tel (RFC 3966) URIs: parse, escape, render, small helpers."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from sipstack.errors import SipParseError
from sipstack.transport import Address

Param = tuple[str, str | None]
"""A parameter: (name, value), value None for a flag such as `;lr`."""

# RFC 3261 §25.1: characters each URI component may carry unescaped; the rest is %-escaped.
# '?' is legal in a user too, but escaping it keeps the user/headers split unambiguous.
USER_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()&=+$,;/]")
PASSWORD_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()&=+$,]")
PARAM_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()\[\]/:&+$]")
HEADER_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()\[\]/?:+$]")

_MAX_PORT = 65535

# Structural split only; each component is validated afterwards so errors can say what is wrong.
_SIP_URI_RE = re.compile(
    r"(?P<scheme>[sS][iI][pP][sS]?):"
    r"(?:(?P<userinfo>[^@?]*)@)?"
    r"(?P<host>\[[^\]]*\]|[^:;?\[\]]*)"
    r"(?::(?P<port>[^;?]*))?"
    r"(?P<params>;[^?]*)?"
    r"(?:\?(?P<headers>.*))?",
    re.DOTALL,
)
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_.])?")
_ESCAPED_OK_RE = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*", re.DOTALL)
# Characters allowed (besides %XX) in each component when we read it. '#' is tolerated in users
# because carriers send it (e.g. `*67#`) although RFC 3261 wants it escaped.
_USER_CHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/#%]+")
_PASSWORD_CHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,%]*")
_PARAMS_SECTION_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%;=]*")
_HEADER_CHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]*")
_TEL_NUMBER_RE = re.compile(
    r"\+[0-9\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*"
)


def shorten(text: str, limit: int = 80) -> str:
    """repr() of text, cut so an error message stays readable whatever the input size."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _percent_encode(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8"))


def escape(text: str, unsafe: re.Pattern[str]) -> str:
    """Percent-encode (UTF-8) every character of text that `unsafe` matches."""
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(_percent_encode, text)


def unescape(text: str, what: str) -> str:
    """Decode %XX escapes (UTF-8); SipParseError naming `what` for bad escapes or bytes."""
    if "%" not in text:
        return text
    if _ESCAPED_OK_RE.fullmatch(text) is None:
        raise SipParseError(f"{what}: bad %-escape in {shorten(text)}")
    parts = text.split("%")
    raw = bytearray(parts[0].encode("utf-8"))
    for part in parts[1:]:
        raw.append(int(part[:2], 16))
        raw += part[2:].encode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(f"{what}: %-escapes in {shorten(text)} are not UTF-8") from None


def parse_host(text: str, what: str) -> str:
    """Validate a host (name, IPv4, or IPv6 with or without brackets); return it unbracketed."""
    if not text:
        raise SipParseError(f"{what}: missing host")
    if text[0] == "[":
        if text[-1] != "]":
            raise SipParseError(f"{what}: unclosed '[' in host {shorten(text)}")
        inner = text[1:-1]
        _check_ipv6(inner, what)
        return inner
    if ":" in text:
        _check_ipv6(text, what)
        return text
    if _HOSTNAME_RE.fullmatch(text) is None:
        raise SipParseError(f"{what}: invalid host {shorten(text)}")
    return text


def _check_ipv6(text: str, what: str) -> None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise SipParseError(f"{what}: invalid IPv6 address {shorten(text)}") from None


def parse_port(text: str, what: str) -> int:
    """A decimal port 1..65535; SipParseError naming `what` otherwise."""
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise SipParseError(f"{what}: bad port {shorten(text)}")
    port = int(text)
    if not 1 <= port <= _MAX_PORT:
        raise SipParseError(f"{what}: port {port} out of range 1..{_MAX_PORT}")
    return port


def format_host(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def format_hostport(host: str, port: int | None) -> str:
    """`host`, `host:port` or `[v6]:port`."""
    return format_host(host) if port is None else f"{format_host(host)}:{port}"


def find_param(params: tuple[Param, ...], name: str) -> Param | None:
    """The first (name, value) whose name equals `name` case-insensitively, or None."""
    lowered = name.lower()
    for param in params:
        if param[0].lower() == lowered:
            return param
    return None


def set_param(params: tuple[Param, ...], name: str, value: str | None) -> tuple[Param, ...]:
    """params with `name` replaced in place (case-insensitively) or appended."""
    lowered = name.lower()
    for i, (existing, _) in enumerate(params):
        if existing.lower() == lowered:
            rest = tuple(p for p in params[i + 1 :] if p[0].lower() != lowered)
            return (*params[:i], (name, value), *rest)
    return (*params, (name, value))


def drop_params(params: tuple[Param, ...], names: Iterable[str]) -> tuple[Param, ...]:
    """params without any of `names` (case-insensitive)."""
    lowered = {name.lower() for name in names}
    return tuple(p for p in params if p[0].lower() not in lowered)


def _parse_uri_params(text: str, what: str) -> tuple[Param, ...]:
    """`;a=b;c` (leading ';' included) into unescaped (name, value) pairs."""
    if _PARAMS_SECTION_RE.fullmatch(text) is None:
        raise SipParseError(f"{what}: invalid character in parameters {shorten(text)}")
    params: list[Param] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise SipParseError(f"{what}: empty parameter name in {shorten(text)}")
        if "=" in value:
            raise SipParseError(f"{what}: unescaped '=' in parameter value {shorten(item)}")
        if "%" in item:
            name = unescape(name, what)
            value = unescape(value, what)
        params.append((name, value if eq else None))
    return tuple(params)


def _render_params(params: tuple[Param, ...]) -> str:
    return "".join(
        f";{escape(name, PARAM_UNSAFE)}"
        if value is None
        else f";{escape(name, PARAM_UNSAFE)}={escape(value, PARAM_UNSAFE)}"
        for name, value in params
    )


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip: or sips: URI. Components are stored unescaped; rendering escapes them."""

    host: str  # IPv6 without brackets
    user: str = ""  # "" when the URI has no userinfo; '+' of E.164 numbers kept
    scheme: Literal["sip", "sips"] = "sip"
    password: str | None = None
    port: int | None = None
    params: tuple[Param, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SipUri:
        uri = parse_uri(text)
        if not isinstance(uri, SipUri):
            raise SipParseError(f"URI {shorten(text)}: expected a sip: or sips: URI")
        return uri

    @property
    def is_secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def default_port(self) -> int:
        """5061 for sips: or `;transport=tls`, else 5060 (RFC 3263 §4.2 defaults)."""
        if self.scheme == "sips":
            return 5061
        transport = self.param("transport")
        return 5061 if transport is not None and transport.lower() == "tls" else 5060

    def host_port(self, default: int | None = None) -> Address:
        """(host, port): the explicit port, else `default`, else the scheme's default port."""
        if self.port is not None:
            return (self.host, self.port)
        return (self.host, self.default_port if default is None else default)

    def param(self, name: str) -> str | None:
        """Value of URI parameter `name` (case-insensitive); None when absent or a flag."""
        found = find_param(self.params, name)
        return None if found is None else found[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name) is not None

    def header(self, name: str) -> str | None:
        """Value of embedded header `name` (case-insensitive), e.g. 'Replaces'; None if absent."""
        lowered = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == lowered:
                return value
        return None

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def with_params(self, *params: Param) -> SipUri:
        """A copy with each (name, value) set (replacing same-named parameters)."""
        merged = self.params
        for name, value in params:
            merged = set_param(merged, name, value)
        return dataclasses.replace(self, params=merged)

    def without_params(self, *names: str) -> SipUri:
        return dataclasses.replace(self, params=drop_params(self.params, names))

    def with_header(self, name: str, value: str) -> SipUri:
        lowered = name.lower()
        kept = tuple(h for h in self.headers if h[0].lower() != lowered)
        return dataclasses.replace(self, headers=(*kept, (name, value)))

    def without_headers(self) -> SipUri:
        """The URI minus `?headers` (what goes into a Request-URI or a remote target)."""
        return dataclasses.replace(self, headers=()) if self.headers else self

    def replace(self, **changes: object) -> SipUri:
        """dataclasses.replace for callers that prefer a method."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def render(self) -> str:
        parts = [self.scheme, ":"]
        if self.user:
            parts.append(escape(self.user, USER_UNSAFE))
            if self.password is not None:
                parts.append(":" + escape(self.password, PASSWORD_UNSAFE))
            parts.append("@")
        parts.append(format_hostport(self.host, self.port))
        if self.params:
            parts.append(_render_params(self.params))
        if self.headers:
            parts.append(
                "?"
                + "&".join(
                    f"{escape(name, HEADER_UNSAFE)}={escape(value, HEADER_UNSAFE)}"
                    for name, value in self.headers
                )
            )
        return "".join(parts)

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True, slots=True)
class TelUri:
    """A tel: URI (RFC 3966): the number as written (visual separators kept) and parameters."""

    number: str
    params: tuple[Param, ...] = ()

    @property
    def scheme(self) -> Literal["tel"]:
        return "tel"

    @property
    def is_secure(self) -> bool:
        return False

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def param(self, name: str) -> str | None:
        found = find_param(self.params, name)
        return None if found is None else found[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name) is not None

    def with_param(self, name: str, value: str | None = None) -> TelUri:
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def render(self) -> str:
        return "tel:" + self.number + _render_params(self.params)

    def __str__(self) -> str:
        return self.render()


Uri = SipUri | TelUri


@lru_cache(maxsize=4096)  # results are immutable; the same URIs recur in every response
def parse_uri(text: str) -> SipUri | TelUri:
    """Parse a sip:, sips: or tel: URI; SipParseError (naming the part at fault) otherwise."""
    text = text.strip()
    scheme_end = text.find(":")
    if scheme_end <= 0:
        raise SipParseError(f"URI {shorten(text)}: missing scheme")
    scheme = text[:scheme_end].lower()
    if scheme == "tel":
        return _parse_tel(text, text[scheme_end + 1 :])
    if scheme not in ("sip", "sips"):
        raise SipParseError(
            f"URI {shorten(text)}: unsupported scheme {text[:scheme_end][:20]!r}"
            " (expected sip, sips or tel)"
        )
    return _parse_sip(text)


def _parse_sip(text: str) -> SipUri:
    try:
        return _parse_sip_parts(text)
    except SipParseError as exc:
        raise SipParseError(f"{exc} (in {shorten(text)})") from None


def _parse_sip_parts(text: str) -> SipUri:
    what = "SIP URI"
    match = _SIP_URI_RE.fullmatch(text)
    if match is None:
        raise SipParseError(f"{what}: malformed host or port")
    userinfo, host_text, port_text, params_text, headers_text = match.group(
        "userinfo", "host", "port", "params", "headers"
    )
    user = ""
    password: str | None = None
    if userinfo is not None:
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise SipParseError(f"{what}: empty user before '@'")
        if _USER_CHARS_RE.fullmatch(user_text) is None:
            raise SipParseError(f"{what}: invalid character in user {shorten(user_text)}")
        user = unescape(user_text, what) if "%" in user_text else user_text
        if colon:
            if _PASSWORD_CHARS_RE.fullmatch(password_text) is None:
                raise SipParseError(f"{what}: invalid character in password")
            password = unescape(password_text, what)
    host = parse_host(host_text, what)
    port = None if port_text is None else parse_port(port_text, what)
    params = _parse_uri_params(params_text, what) if params_text else ()
    headers: tuple[tuple[str, str], ...] = ()
    if headers_text is not None:
        headers = _parse_uri_headers(headers_text, what)
    scheme: Literal["sip", "sips"] = "sips" if len(match.group("scheme")) == 4 else "sip"
    return SipUri(host, user, scheme, password, port, params, headers)


def _parse_uri_headers(text: str, what: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not name or not eq:
            raise SipParseError(f"{what}: URI header {shorten(item)} is not name=value")
        if _HEADER_CHARS_RE.fullmatch(name + value) is None:
            raise SipParseError(f"{what}: invalid character in URI header {shorten(item)}")
        headers.append((unescape(name, what), unescape(value, what)))
    return tuple(headers)


def _parse_tel(text: str, rest: str) -> TelUri:
    what = f"tel URI {shorten(text)}"
    number, semi, params_text = rest.partition(";")
    if not number:
        raise SipParseError(f"{what}: missing number")
    if _TEL_NUMBER_RE.fullmatch(number) is None:
        raise SipParseError(f"{what}: invalid number {shorten(number)}")
    if "?" in params_text:
        raise SipParseError(f"{what}: tel URIs cannot carry ?headers")
    params = _parse_uri_params(";" + params_text, what) if semi else ()
    return TelUri(number=number, params=params)
