"""Refer-To (RFC 3515): a NameAddr whose URI may embed headers such as ?Replaces=."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sipstack.headers.name_addr import NameAddr
from sipstack.uri import SipUri


@dataclass(frozen=True, slots=True)
class ReferTo(NameAddr):
    HEADER: ClassVar[str] = "Refer-To"

    @property
    def replaces(self) -> str | None:
        """The unescaped embedded Replaces header (RFC 3891), if any."""
        return self.uri.header("Replaces") if isinstance(self.uri, SipUri) else None
