"""Privacy (RFC 3323, `id` from RFC 3325, `history` from RFC 7044): a list of tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.headers._syntax import TOKEN_RE, shorten

_SEPARATOR_RE = re.compile(r"[ \t]*[;,][ \t]*")


@dataclass(frozen=True, slots=True)
class Privacy:
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Privacy:
        stripped = text.strip(" \t")
        if not stripped:
            raise SipParseError("Privacy: empty value")
        # RFC 3323 separates values with ';'; some peers use ',' (as if repeated headers).
        tokens = tuple(_SEPARATOR_RE.split(stripped))
        for token in tokens:
            if TOKEN_RE.fullmatch(token) is None:
                raise SipParseError(f"Privacy: {shorten(token, 30)} is not a priv-value token")
        return cls(tokens)

    def __contains__(self, token: object) -> bool:
        """Case-insensitive membership: `"id" in privacy`."""
        if not isinstance(token, str):
            return False
        lowered = token.lower()
        return any(t.lower() == lowered for t in self.tokens)

    @property
    def is_none(self) -> bool:
        """`Privacy: none`: the user asks for no privacy."""
        return "none" in self

    def render(self) -> str:
        return ";".join(self.tokens)

    def __str__(self) -> str:
        return self.render()
