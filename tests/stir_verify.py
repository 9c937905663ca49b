"""An independent STIR/SHAKEN verifier for the tests (joserfc, not the signer's code): the
Identity header's parameters, the ES256 signature against the certificate, iat freshness."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey
from joserfc.registry import HeaderParameter

# RFC 8225 §5.1: `ppt` names the PASSporT extension; joserfc refuses header names it does not know
_REGISTRY = jws.JWSRegistry(
    header_registry={"ppt": HeaderParameter("PASSporT extension", "str", required=True)},
    algorithms=["ES256"],
)

FRESHNESS = 60.0  # seconds (the terminating side's rule, ATIS-1000074)


class VerificationFailed(Exception):
    pass


def make_stir_files(directory: Path) -> tuple[Path, Path]:
    """A P-256 key and a self-signed certificate for it (made here, never checked in)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SHAKEN test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_file, cert_file = directory / "stir-key.pem", directory / "stir-cert.pem"
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def verify_identity(value: str, cert_pem: bytes, *, x5u: str, now: float) -> dict[str, Any]:
    """The PASSporT claims of a valid Identity header; VerificationFailed says what is wrong."""
    token, _, params_text = value.strip().partition(";")
    params = dict(
        [*part.split("=", 1), ""][:2] for part in params_text.split(";") if part
    )
    if params.get("info") != f"<{x5u}>":
        raise VerificationFailed(f"info is {params.get('info')!r}, not <{x5u}>")
    if params.get("alg") != "ES256" or params.get("ppt") != "shaken":
        raise VerificationFailed(f"alg/ppt are {params.get('alg')}/{params.get('ppt')}")
    public_pem = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        signed = jws.deserialize_compact(token, ECKey.import_key(public_pem),
                                         algorithms=["ES256"], registry=_REGISTRY)
    except Exception as error:
        raise VerificationFailed(f"signature: {error.__class__.__name__}: {error}") from None
    header = signed.protected
    if (header.get("typ"), header.get("ppt"), header.get("x5u")) != ("passport", "shaken", x5u):
        raise VerificationFailed(f"protected header {header}")
    claims: dict[str, Any] = json.loads(signed.payload)
    age = now - float(claims["iat"])
    if not -1.0 <= age <= FRESHNESS:
        raise VerificationFailed(f"iat {claims['iat']} is {age:.1f} s old at {now:.0f}")
    return claims


def tampered(value: str) -> str:
    """The same header with one claim changed (another destination number), signature kept."""
    token, sep, params = value.partition(";")
    head, payload, signature = token.split(".")
    claims = json.loads(_b64decode(payload))
    claims["dest"] = {"tn": ["15559999999"]}
    forged = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{head}.{forged}.{signature}{sep}{params}"


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
