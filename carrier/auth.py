"""Digest authentication for the carrier's `--challenge`: stateless nonces, RFC 2617/7616 checks."""

from __future__ import annotations

import hashlib
import hmac
import os
from enum import Enum

from sipstack.auth import (
    QOP_AUTH,
    DigestAlgorithm,
    DigestChallenge,
    parse_authorization,
    verify_authorization,
)
from sipstack.errors import SipParseError
from sipstack.message import Request

NONCE_LIFETIME = 300.0


class AuthVerdict(Enum):
    ACCEPTED = "accepted"
    MISSING = "missing"  # no Authorization: challenge
    STALE = "stale"  # right realm, a nonce of ours that expired: challenge again, stale=true
    REJECTED = "rejected"  # wrong credentials: 403


class DigestAuthenticator:
    """Challenges with 401 and checks the answer; nonces carry their own time and MAC, so no
    per-call state is kept between the 401 and the retried INVITE."""

    def __init__(
        self,
        *,
        realm: str,
        username: str,
        password: str,
        algorithm: DigestAlgorithm = DigestAlgorithm.MD5,
        secret: bytes | None = None,
        nonce_lifetime: float = NONCE_LIFETIME,
    ) -> None:
        self.realm = realm
        self.username = username
        self._password = password
        self.algorithm = algorithm
        self._secret = secret if secret is not None else os.urandom(32)
        self._lifetime = nonce_lifetime

    def _mac(self, issued: str) -> str:
        return hmac.new(self._secret, issued.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    def nonce(self, now: float) -> str:
        issued = f"{int(now * 1000):x}"
        return f"{issued}.{self._mac(issued)}"

    def nonce_is_ours(self, nonce: str, now: float) -> bool:
        issued, dot, mac = nonce.partition(".")
        if not dot or not hmac.compare_digest(mac, self._mac(issued)):
            return False
        try:
            issued_at = int(issued, 16) / 1000
        except ValueError:
            return False
        return 0 <= now - issued_at <= self._lifetime

    def challenge(self, now: float, *, stale: bool = False) -> str:
        return DigestChallenge(
            realm=self.realm,
            nonce=self.nonce(now),
            algorithm=self.algorithm,
            qop=(QOP_AUTH,),
            stale=stale,
        ).render()

    def check(self, request: Request, now: float) -> AuthVerdict:
        value = request.header("authorization")
        if value is None:
            return AuthVerdict.MISSING
        try:
            creds = parse_authorization(value)
        except SipParseError:
            return AuthVerdict.REJECTED
        if creds.realm != self.realm:
            return AuthVerdict.REJECTED
        right = verify_authorization(
            creds,
            password=self._password,
            method=request.method,
            body=request.body,
            username=self.username,
        )
        if not right:
            return AuthVerdict.REJECTED
        return AuthVerdict.ACCEPTED if self.nonce_is_ours(creds.nonce, now) else AuthVerdict.STALE
