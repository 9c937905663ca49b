"""Identity (RFC 8224): kept verbatim, with its info, alg and ppt parameters readable."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.headers._syntax import TOKEN_RE, shorten, unquote_value
from sipstack.uri import Param, find_param

# A compact JWS (RFC 8224), or the quoted base64 of the older RFC 4474 form.
_DIGEST_RE = re.compile(r"[A-Za-z0-9+/=_\-.]+|\"[A-Za-z0-9+/=]+\"")
# ident-info is an absoluteURI in <>, which may itself contain ';'.
_IDENTITY_PARAM_RE = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"(?:[ \t]*=[ \t]*(<[^<>\r\n]*>|\"(?:[^\"\\\r\n]|\\[^\r\n])*\"|[^ \t\r\n;,\"<>]*))?[ \t]*"
)


@dataclass(frozen=True, slots=True)
class Identity:
    """value is exactly what was parsed (and what render() returns)."""

    value: str
    digest: str  # the signed-identity-digest (a compact JWS for PASSporT)
    params: tuple[Param, ...]

    @classmethod
    def parse(cls, text: str) -> Identity:
        value = text.strip()
        semi = value.find(";")
        digest = (value if semi < 0 else value[:semi]).rstrip()
        if not digest:
            raise SipParseError("Identity: missing signed-identity-digest")
        if _DIGEST_RE.fullmatch(digest) is None:
            raise SipParseError(f"Identity: digest {shorten(digest, 40)} is not base64url text")
        params: list[Param] = []
        pos = len(digest) if semi < 0 else semi
        while pos < len(value):
            match = _IDENTITY_PARAM_RE.match(value, pos)
            if match is None:
                raise SipParseError(f"Identity: malformed parameter at {shorten(value[pos:], 40)}")
            params.append((match.group(1), match.group(2)))
            pos = match.end()
        result = cls(value, digest, tuple(params))
        for name in ("alg", "ppt"):
            param_value = result._param(name)
            if param_value is not None and TOKEN_RE.fullmatch(unquote_value(param_value)) is None:
                raise SipParseError(f"Identity: {name} {shorten(param_value, 20)} is not a token")
        return result

    def _param(self, name: str) -> str | None:
        found = find_param(self.params, name)
        return None if found is None else found[1]

    @property
    def info(self) -> str | None:
        """The certificate URL from `info=<...>`, without the angle brackets."""
        value = self._param("info")
        if value is None:
            return None
        return value[1:-1] if value.startswith("<") and value.endswith(">") else value

    @property
    def alg(self) -> str | None:
        value = self._param("alg")
        return None if value is None else unquote_value(value)

    @property
    def ppt(self) -> str | None:
        """The PASSporT extension, e.g. 'shaken' (quotes removed)."""
        value = self._param("ppt")
        return None if value is None else unquote_value(value)

    def render(self) -> str:
        return self.value

    def __str__(self) -> str:
        return self.render()
