"""STIR/SHAKEN for a worker's trunk: load its signer once, sign each INVITE just before it goes.

The key and certificate files are read at the worker's start (`load_call_signer`): a file that
cannot be read, a key that is not P-256 or a certificate that is not the key's is a
ConfigError naming the trunk key. `CallSigner.sign` runs on the signaling loop right before
the core builds the INVITE, so `iat` is the moment it leaves and every leg gets a fresh
`origid` (uuid4). An INVITE sent again on the same leg (401/407, 422, 421) within the same
seconds keeps the header it was signed with: its `iat` stays inside the verifier's window.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sipstack.dial import DialRequest
from sipstack.stir import Attestation, Signer, shaken_passport
from workers.config.errors import ConfigError
from workers.config.trunks import TrunkConfig


@dataclasses.dataclass(frozen=True, slots=True)
class CallSigner:
    """Signs the INVITEs of one trunk with its attestation unless a dial names another."""

    signer: Signer
    attest: Attestation
    clock: Callable[[], float] = time.time
    origid: Callable[[], uuid.UUID] = uuid.uuid4

    def sign(self, request: DialRequest, attest: str = "") -> DialRequest:
        """The request with its Identity header; ValueError names a caller or callee that
        is not a telephone number (SHAKEN signs numbers only)."""
        orig = (request.asserted_identity_uri or request.caller_user
                or request.target.caller_user)
        passport = shaken_passport(
            attest=Attestation(attest) if attest else self.attest,
            orig=orig, dest=request.target.request_uri, iat=self.clock(),
            origid=self.origid(),
        )
        return dataclasses.replace(request, identity_header=self.signer.identity_header(passport))


def load_call_signer(trunk: TrunkConfig, where: str = "") -> CallSigner | None:
    """The trunk's signer, or None when it does not sign; ConfigError names the bad key."""
    if not trunk.stir_key_file:
        return None
    prefix = where or f"trunks.{trunk.name}"
    key_pem = _read(trunk.stir_key_file, f"{prefix}.stir_key_file")
    cert_pem = (_read(trunk.stir_cert_file, f"{prefix}.stir_cert_file")
                if trunk.stir_cert_file else None)
    try:
        signer = Signer.from_pem(key_pem, trunk.stir_x5u, cert_pem=cert_pem)
    except ValueError as error:
        key = "stir_cert_file" if "certificate" in str(error) else "stir_key_file"
        raise ConfigError(f"{prefix}.{key}: {error}") from None
    return CallSigner(signer, Attestation(trunk.stir_attest))


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror or error}") from None
