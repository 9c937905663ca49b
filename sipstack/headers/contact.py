"""Contact values (RFC 3261 §20.10): a NameAddr plus `expires` and `q`, and the `*` wildcard."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Self

from sipstack.errors import SipParseError
from sipstack.headers._syntax import parse_delta_seconds, shorten
from sipstack.headers.name_addr import NameAddr

_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


@dataclass(frozen=True, slots=True)
class Contact(NameAddr):
    """One Contact address. The wildcard `*` (REGISTER only) is not an address: see is_wildcard."""

    HEADER: ClassVar[str] = "Contact"

    @staticmethod
    def is_wildcard(value: str) -> bool:
        """True for the `Contact: *` form, which parse()/parse_all() reject."""
        return value.strip() == "*"

    @classmethod
    def _checked(cls, value: Self, header: str) -> Self:
        name = header
        expires = value.param("expires")
        if expires is not None:
            parse_delta_seconds(expires, name, "expires")
        elif value.has_param("expires"):
            raise SipParseError(f"{name}: expires parameter without a value")
        q = value.param("q")
        if value.has_param("q") and (q is None or _QVALUE_RE.fullmatch(q) is None):
            raise SipParseError(f"{name}: q {shorten(q or '', 20)} is not a qvalue 0..1")
        return value

    @classmethod
    def parse(cls, text: str, header: str | None = None) -> Self:
        if cls.is_wildcard(text):
            raise SipParseError(
                f"{header or cls.HEADER}: '*' is a wildcard, not an address (check is_wildcard)"
            )
        return super(Contact, cls).parse(text, header)

    @property
    def expires(self) -> int | None:
        """The `expires` parameter in seconds, None when absent (validated by parse)."""
        value = self.param("expires")
        return None if value is None else int(value)

    @property
    def q(self) -> float | None:
        value = self.param("q")
        return None if value is None else float(value)
