"""STIR/SHAKEN signing: the PASSporT (RFC 8225, RFC 8588), ES256 JWS and the Identity header.

Pure apart from the signature itself: `iat` and `origid` are passed in, the key comes in as
PEM bytes (reading the files is the caller's I/O). Only the signing side is here; verifying
is the terminating carrier's job, and the tests verify with an independent JOSE library.

- Canonical JSON (RFC 8225 §9): keys sorted lexicographically, no whitespace, UTF-8.
- JWS compact serialisation (RFC 7515) with the ES256 signature as raw r || s, 32 bytes each
  (RFC 7518 §3.4), not the DER that `cryptography` produces.
- Identity header (RFC 8224 §4.1): `<jws>;info=<x5u>;alg=ES256;ppt=shaken`.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sipstack.errors import SipParseError
from sipstack.uri import SipUri, TelUri, parse_uri, shorten

ALG = "ES256"
PPT = "shaken"
TYP = "passport"
_P256_BYTES = 32
# RFC 3966 visual separators between digits; anything else in a number is an error.
_VISUAL_SEPARATORS_RE = re.compile(r"[-.()\s]")
_DIGITS_RE = re.compile(r"\+?[0-9]+")
_MAX_TN_DIGITS = 15  # E.164


class Attestation(StrEnum):
    """RFC 8588 §4: A full (we know the caller and their right to the number), B partial,
    C gateway (we only know where the call came from)."""

    FULL = "A"
    PARTIAL = "B"
    GATEWAY = "C"


def normalize_tn(text: str) -> str:
    """The telephone number of a sip:/sips:/tel: URI or a plain number, as digits only.

    `sip:+1 555...@host;user=phone` and `tel:+1-555-...` give the user part's digits, without
    '+' and visual separators (RFC 8224 §8.3 canonicalisation for E.164 numbers). ValueError
    names the input when no number can be taken from it.
    """
    raw = text.strip()
    number = raw
    if ":" in raw and raw.split(":", 1)[0].lower() in ("sip", "sips", "tel"):
        try:
            uri = parse_uri(raw)
        except SipParseError as error:
            raise ValueError(f"telephone number {shorten(raw, 60)}: {error}") from None
        if isinstance(uri, TelUri):
            number = uri.number
        else:
            assert isinstance(uri, SipUri)
            number = uri.user.split(";", 1)[0]  # drop user-part parameters (;isub=, ;ext=)
            if not number:
                raise ValueError(f"telephone number {shorten(raw, 60)}: the URI has no user part")
    compact = _VISUAL_SEPARATORS_RE.sub("", number)
    if _DIGITS_RE.fullmatch(compact) is None:
        raise ValueError(
            f"telephone number {shorten(raw, 60)}: {shorten(number, 30)} is not digits"
            " with an optional leading '+' and visual separators"
        )
    digits = compact.lstrip("+")
    if len(digits) > _MAX_TN_DIGITS:
        raise ValueError(
            f"telephone number {shorten(raw, 60)}: {len(digits)} digits, more than E.164's 15"
        )
    return digits


@dataclass(frozen=True, slots=True, kw_only=True)
class Passport:
    """The claims of one SHAKEN PASSporT; tns already normalised (see `normalize_tn`)."""

    attest: Attestation
    orig_tn: str
    dest_tns: tuple[str, ...]
    iat: int
    origid: uuid.UUID

    def __post_init__(self) -> None:
        object.__setattr__(self, "attest", Attestation(self.attest))
        for name, tn in [("orig_tn", self.orig_tn), *(("dest_tns", t) for t in self.dest_tns)]:
            if not (tn.isascii() and tn.isdigit()) or len(tn) > _MAX_TN_DIGITS:
                raise ValueError(f"passport {name}: {tn!r} is not 1-15 digits (normalize_tn)")
        if not self.dest_tns:
            raise ValueError("passport dest_tns: at least one destination number is needed")
        if type(self.iat) is not int or self.iat < 0:
            raise ValueError(f"passport iat: {self.iat!r} is not whole epoch seconds")

    def claims(self) -> dict[str, object]:
        return {
            "attest": self.attest.value,
            "dest": {"tn": list(self.dest_tns)},
            "iat": self.iat,
            "orig": {"tn": self.orig_tn},
            "origid": str(self.origid),
        }


def canonical_json(value: object) -> bytes:
    """RFC 8225 §9: lexicographically sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Signer:
    """Signs PASSporTs with one P-256 key whose certificate is published at `x5u`."""

    __slots__ = ("_key", "x5u")

    def __init__(self, key: ec.EllipticCurvePrivateKey, x5u: str) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"STIR key: ES256 needs a P-256 key, not {key.curve.name}")
        if not x5u.startswith("https://") or any(c in x5u for c in '<>"; \t\r\n'):
            raise ValueError(f"STIR x5u {shorten(x5u, 60)!r}: expected an https:// URL")
        self._key = key
        self.x5u = x5u

    @classmethod
    def from_pem(
        cls,
        key_pem: bytes,
        x5u: str,
        *,
        cert_pem: bytes | None = None,
        password: bytes | None = None,
    ) -> Signer:
        """Load the private key; with `cert_pem`, check the certificate carries its public key."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
        except (ValueError, TypeError) as error:
            raise ValueError(f"STIR key: not a usable PEM private key ({error})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"STIR key: ES256 needs an EC key, not {type(key).__name__}")
        if cert_pem is not None:
            try:
                cert = x509.load_pem_x509_certificate(cert_pem)
            except ValueError as error:
                raise ValueError(f"STIR certificate: not a PEM certificate ({error})") from None
            if cert.public_key() != key.public_key():
                raise ValueError("STIR certificate: its public key is not the signing key's")
        return cls(key, x5u)

    def header(self) -> dict[str, str]:
        return {"alg": ALG, "ppt": PPT, "typ": TYP, "x5u": self.x5u}

    def sign(self, passport: Passport) -> str:
        """The compact JWS: base64url(header).base64url(claims).base64url(r || s)."""
        signing_input = (
            b64url(canonical_json(self.header())) + "." + b64url(canonical_json(passport.claims()))
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
        return signing_input + "." + b64url(signature)

    def identity_header(self, passport: Passport) -> str:
        """The Identity header value (RFC 8224 §4.1), for DialRequest.identity_header."""
        return f"{self.sign(passport)};info=<{self.x5u}>;alg={ALG};ppt={PPT}"


def shaken_passport(
    *, attest: Attestation | str, orig: str, dest: str, iat: float, origid: uuid.UUID
) -> Passport:
    """A PASSporT from the caller and callee as written (URIs or numbers); iat truncated."""
    return Passport(
        attest=Attestation(attest),
        orig_tn=normalize_tn(orig),
        dest_tns=(normalize_tn(dest),),
        iat=int(iat),
        origid=origid,
    )
