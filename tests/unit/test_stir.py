"""STIR/SHAKEN signing (sipstack.stir), verified by an independent JOSE library (PyJWT)."""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sipstack.headers.identity import Identity
from sipstack.stir import Attestation, Passport, Signer, normalize_tn, shaken_passport

X5U = "https://cert.example.org/shaken.pem"
ORIGID = uuid.UUID("123e4567-e89b-42d3-a456-426614174000")
FRESHNESS = 60  # RFC 8224 §6.2.1: the verifier's window for iat


def make_key_and_cert(curve: ec.EllipticCurve | None = None) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pems() -> tuple[bytes, bytes]:
    return make_key_and_cert()


def verify(token: str, cert_pem: bytes, now: float) -> dict[str, Any]:
    """A verifier of our own making on PyJWT: signature by the certificate's key, iat required
    and not in the future (PyJWT's rule, with 1 s leeway), and younger than FRESHNESS."""
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    claims: dict[str, Any] = jwt.decode(
        token,
        key=public_key,  # type: ignore[arg-type]
        algorithms=["ES256"],
        options={"require": ["iat"], "verify_iat": True},
        leeway=1,
    )
    if now - claims["iat"] >= FRESHNESS:
        raise jwt.InvalidIssuedAtError(f"iat is {now - claims['iat']:.0f} s old")
    return claims


def passport(iat: float) -> Passport:
    return shaken_passport(
        attest="A",
        orig="sip:+15551234567@sbc.example.com;user=phone",
        dest="tel:+1-555-987-6543",
        iat=iat,
        origid=ORIGID,
    )


def test_the_signature_verifies_with_the_certificates_key_and_claims_round_trip(
    pems: tuple[bytes, bytes],
) -> None:
    key_pem, cert_pem = pems
    now = time.time()
    signer = Signer.from_pem(key_pem, X5U, cert_pem=cert_pem)
    token = signer.sign(passport(now))
    assert verify(token, cert_pem, now) == {
        "attest": "A",
        "dest": {"tn": ["15559876543"]},
        "iat": int(now),
        "orig": {"tn": "15551234567"},
        "origid": str(ORIGID),
    }
    assert jwt.get_unverified_header(token) == {
        "alg": "ES256",
        "ppt": "shaken",
        "typ": "passport",
        "x5u": X5U,
    }


def test_header_and_claims_are_canonical_json(pems: tuple[bytes, bytes]) -> None:
    token = Signer.from_pem(pems[0], X5U).sign(passport(1_700_000_000))
    header, payload, signature = (
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")
    )
    assert header == (
        b'{"alg":"ES256","ppt":"shaken","typ":"passport",'
        b'"x5u":"https://cert.example.org/shaken.pem"}'
    )
    assert payload == (
        b'{"attest":"A","dest":{"tn":["15559876543"]},"iat":1700000000,'
        b'"orig":{"tn":"15551234567"},"origid":"123e4567-e89b-42d3-a456-426614174000"}'
    )
    assert (
        json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode() == payload
    )
    assert len(signature) == 64  # raw r || s, not DER
    assert "=" not in token


def test_a_sixty_second_old_iat_is_rejected_and_a_fresh_one_accepted(
    pems: tuple[bytes, bytes],
) -> None:
    key_pem, cert_pem = pems
    signer = Signer.from_pem(key_pem, X5U)
    now = time.time()
    assert verify(signer.sign(passport(now - 59)), cert_pem, now)["iat"] == int(now - 59)
    with pytest.raises(jwt.InvalidIssuedAtError, match="old"):
        verify(signer.sign(passport(now - 60)), cert_pem, now)
    with pytest.raises(jwt.ImmatureSignatureError):  # PyJWT's own rule: iat in the future
        verify(signer.sign(passport(now + 120)), cert_pem, now)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_tampered_token_fails(pems: tuple[bytes, bytes], part: int) -> None:
    key_pem, cert_pem = pems
    now = time.time()
    parts = Signer.from_pem(key_pem, X5U).sign(passport(now)).split(".")
    if part == 0:
        forged = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://evil.test/c"}
        parts[0] = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    elif part == 1:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
        claims["orig"]["tn"] = "15550000000"
        parts[1] = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    else:
        parts[2] = ("A" if parts[2][0] != "A" else "B") + parts[2][1:]
    with pytest.raises(jwt.InvalidSignatureError):
        verify(".".join(parts), cert_pem, now)


def test_another_certificate_does_not_verify(pems: tuple[bytes, bytes]) -> None:
    _, other_cert = make_key_and_cert()
    now = time.time()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(Signer.from_pem(pems[0], X5U).sign(passport(now)), other_cert, now)


def test_identity_header_value(pems: tuple[bytes, bytes]) -> None:
    signer = Signer.from_pem(pems[0], X5U)
    value = signer.identity_header(passport(1_700_000_000))
    jws, _, params = value.partition(";")
    assert params == f"info=<{X5U}>;alg=ES256;ppt=shaken"
    assert jws.count(".") == 2
    parsed = Identity.parse(value)  # the stack's own RFC 8224 parser accepts it
    assert parsed.digest == jws


def test_key_loading_errors_name_the_problem(pems: tuple[bytes, bytes]) -> None:
    key_pem, _ = pems
    _, other_cert = make_key_and_cert()
    with pytest.raises(ValueError, match="public key is not the signing key"):
        Signer.from_pem(key_pem, X5U, cert_pem=other_cert)
    with pytest.raises(ValueError, match="not a usable PEM private key"):
        Signer.from_pem(b"-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n", X5U)
    p384_key, _ = make_key_and_cert(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        Signer.from_pem(p384_key, X5U)
    with pytest.raises(ValueError, match="https://"):
        Signer.from_pem(key_pem, "http://cert.example.org/c.pem")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        Signer.from_pem(key_pem, X5U, cert_pem=b"junk")


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("sip:+15551234567@carrier.example.com;user=phone", "15551234567"),
        ("sips:+44-20-7946-0958@example.com", "442079460958"),
        ("sip:15551234567;isub=12@example.com", "15551234567"),
        ("tel:+1-555-123-4567", "15551234567"),
        ("tel:+1.555.(123).4567;phone-context=example.com", "15551234567"),
        ("+1 (555) 123-4567", "15551234567"),
        ("15551234567", "15551234567"),
    ],
)
def test_normalize_tn(text: str, digits: str) -> None:
    assert normalize_tn(text) == digits


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sip:alice@example.com", "'alice' is not digits"),
        ("sip:example.com", "no user part"),
        ("tel:", "tel:"),
        ("", "is not digits"),
        ("+1555*123", "is not digits"),
        ("+1234567890123456", "16 digits"),
    ],
)
def test_normalize_tn_errors_name_the_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("(", r"\(")):
        normalize_tn(text)


def test_passport_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="orig_tn"):
        Passport(attest=Attestation.FULL, orig_tn="+1555", dest_tns=("1",), iat=1, origid=ORIGID)
    with pytest.raises(ValueError, match="dest_tns"):
        Passport(attest=Attestation.FULL, orig_tn="1555", dest_tns=(), iat=1, origid=ORIGID)
    with pytest.raises(ValueError, match="'D' is not a valid Attestation"):
        shaken_passport(attest="D", orig="1", dest="2", iat=1, origid=ORIGID)
