"""Digest authentication of a leg's requests (RFC 3261 §22, RFC 7616): answering a
401/407 to an OutstandingRequest, and fresh credentials for every later request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.auth import DigestSession, choose_challenge
from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.leg import Leg
from sipstack.message import Response
from sipstack.outstanding import OutstandingRequest
from sipstack.uac_base import MAX_AUTH_TRIES

if TYPE_CHECKING:
    from sipstack.uac import UacCore


class Digest:
    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

    def _answer_challenge(
        self, leg: Leg, request: OutstandingRequest, response: Response
    ) -> str | None:
        """Take a 401/407 to `request`: None when it may go again (the challenge is kept for
        it and the leg's later requests, and its tries counted), else the error text.

        A challenge of a kind the request already answered means rejected credentials, unless
        it says stale=true (§22.2, RFC 7616 §3.3); stale loops stop after MAX_AUTH_TRIES.
        Credentials sent pre-emptively (tries 0) were never asked for, so cannot be rejected.
        """
        code = response.status_code
        tries = request.auth_tries
        credentials = leg.credentials
        if credentials is None:
            return f"authentication failed: {code} challenge and no credentials"
        if tries >= MAX_AUTH_TRIES:
            return f"authentication failed: still challenged ({code}) after {tries} answers"
        proxy = code == 407
        challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        answer_header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            challenge = choose_challenge(
                response.headers_all(challenge_header), realm=credentials.realm
            )
        except SipParseError as exc:
            return f"authentication failed: {exc}"
        answered = request.auth_headers if tries else ()
        if any(name == answer_header for name, _ in answered) and not challenge.stale:
            return (
                f"authentication failed: credentials for realm {challenge.realm!r} "
                f"were rejected ({code} again)"
            )
        if leg.auth_challenges is None:
            leg.auth_challenges = {}
        leg.auth_challenges[answer_header] = challenge
        self._core.shared.stats.auth_retries += 1
        request.auth_tries += 1
        return None

    def _credentials(
        self, leg: Leg, *, method: str, uri: str, body: bytes = b""
    ) -> tuple[tuple[str, str], ...]:
        """Fresh credentials (next nc) for every challenge the leg has answered, if any."""
        challenges = leg.auth_challenges
        credentials = leg.credentials
        if not challenges or credentials is None:
            return ()
        if leg.auth is None:
            leg.auth = DigestSession(
                credentials.username,
                credentials.password,
                realm=credentials.realm,
                random_bytes=self._core.shared._random_bytes,
            )
        answers: list[tuple[str, str]] = []
        for header, challenge in challenges.items():
            try:
                answers.append(
                    (header, leg.auth.authorize(challenge, method=method, uri=uri, body=body))
                )
            except (LocalProtocolError, SipParseError):
                continue  # the request goes without; its challenge then ends the retries
        return tuple(answers)
