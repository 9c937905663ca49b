"""The validated dial request the repository stores: `workers.contract.dial_message` defines it.

`DialFields` is the dial message (`DialMessage`); these names stay for the storage code
(`operations.insert_leg`, `Repository.create_leg`) so there is one definition of a request.
"""

from __future__ import annotations

from workers.contract.dial_message import (
    MAX_TIMEOUT_SECONDS,
    DialMessage,
    InvalidDialRequest,
    parse_dial_message,
)

DialFields = DialMessage
validate_dial_fields = parse_dial_message

__all__ = [
    "MAX_TIMEOUT_SECONDS", "DialFields", "DialMessage", "InvalidDialRequest",
    "validate_dial_fields",
]
