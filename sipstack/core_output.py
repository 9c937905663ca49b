"""What the UAC core hands back to its shell: data to send (Outgoing) and its counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

from sipstack.transport import Address, Transport


class Outgoing(NamedTuple):
    """Bytes to send to `address` over `transport` (TCP/TLS: the pooled connection to it)."""

    data: bytes
    transport: Transport
    address: Address


@dataclass(slots=True)
class CoreStats:
    """Counters of the core; the shell exports them as metrics."""

    messages_received: int = 0
    parse_errors: int = 0  # bytes that were not a SIP message
    stray_responses: int = 0  # responses matching no transaction and no leg
    rejected_messages: int = 0  # parsed, but a header value we need was unusable
    orphan_answers: int = 0  # 2xx for no live leg (a fork, a dropped leg): ACKed and BYEd
    dropped_answers: int = 0  # 2xx for no INVITE we sent (or over a cap): not ACKed or BYEd
    unexpected_inputs: int = 0  # a response or timer a transaction state does not accept
    absorbed_retransmissions: int = 0  # retransmitted responses/requests answered from state
    retransmissions: int = 0  # our requests/responses sent again by a timer
    requests_received: int = 0
    unknown_dialog_requests: int = 0  # answered 481
    unsupported_requests: int = 0  # answered 501
    auth_retries: int = 0
    retries_421: int = 0  # INVITEs sent again with 100rel after a 421 asked for it
    session_refreshes_sent: int = 0
    session_refreshes_received: int = 0
    legs_started: int = 0
    legs_ended: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
