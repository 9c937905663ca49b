"""One request we send and what its retries need: its client transaction, the credentials it
carried, how many challenges it answered, and whether a 422 already raised its interval.

A leg holds one per kind of request it keeps going (the INVITE, the BYE, the session refresh);
each retry is the same OutstandingRequest sent again, so the digest and 422 rules are written
once (uac_base._answer_challenge) instead of once per method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipstack.transactions import ClientTransaction

AuthHeaders = tuple[tuple[str, str], ...]


class OutstandingRequest:
    __slots__ = ("auth_headers", "auth_tries", "method", "retried_422", "transaction")

    def __init__(self, method: str) -> None:
        self.method = method
        self.transaction: ClientTransaction | None = None
        self.auth_headers: AuthHeaders = ()  # the credentials the latest send carried
        self.auth_tries = 0  # challenges answered by sending it again
        self.retried_422 = False  # a 422 raised the interval once already

    def accepted(self) -> None:
        """A 2xx: the next request of this kind starts afresh."""
        self.auth_tries = 0
        self.retried_422 = False

    def __repr__(self) -> str:
        return (
            f"<OutstandingRequest {self.method} tries={self.auth_tries} "
            f"retried_422={self.retried_422}>"
        )
