"""P-Asserted-Identity (RFC 3325): at most one sip/sips and one tel identity."""

from __future__ import annotations

from dataclasses import dataclass

from sipstack.errors import SipParseError
from sipstack.headers.name_addr import NameAddr
from sipstack.headers.split import split_header_values
from sipstack.uri import SipUri, TelUri

_HEADER = "P-Asserted-Identity"


@dataclass(frozen=True, slots=True)
class PAssertedIdentity:
    identities: tuple[NameAddr, ...]

    def __post_init__(self) -> None:
        _check_identities(self.identities)

    @classmethod
    def parse(cls, text: str) -> PAssertedIdentity:
        try:
            elements = split_header_values(text)
        except SipParseError as exc:
            raise SipParseError(f"{_HEADER}: {exc}") from None
        identities = tuple(NameAddr.parse(element, _HEADER) for element in elements)
        return cls(identities)

    @property
    def sip(self) -> NameAddr | None:
        """The sip: or sips: identity, if present."""
        return next((i for i in self.identities if isinstance(i.uri, SipUri)), None)

    @property
    def tel(self) -> NameAddr | None:
        return next((i for i in self.identities if isinstance(i.uri, TelUri)), None)

    def render(self) -> str:
        return ", ".join(identity.render() for identity in self.identities)

    def __str__(self) -> str:
        return self.render()


def _check_identities(identities: tuple[NameAddr, ...]) -> None:
    if not identities:
        raise SipParseError(f"{_HEADER}: no identity")
    if len(identities) > 2:
        raise SipParseError(f"{_HEADER}: {len(identities)} identities (at most 2 allowed)")
    sip_count = sum(isinstance(identity.uri, SipUri) for identity in identities)
    if len(identities) == 2 and sip_count != 1:
        kind = "sip/sips" if sip_count == 2 else "tel"
        raise SipParseError(f"{_HEADER}: two {kind} identities (at most one of each allowed)")
