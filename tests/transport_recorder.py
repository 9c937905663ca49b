"""A receiver for Transports in tests: keeps what it delivers and which connections it lost."""

from __future__ import annotations

from typing import Any

from sipstack.transport import Address, Transport
from workers.signaling.transports import TransportConfig, Transports


class Recorder:
    """Collects what Transports delivers and reports."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address, Transport]] = []
        self.lost: list[tuple[Transport, Address]] = []

    def on_receive(self, data: bytes, source: Address, transport: Transport) -> None:
        self.received.append((data, source, transport))

    def on_lost(self, transport: Transport, address: Address) -> None:
        self.lost.append((transport, address))

    async def transports(self, **config: Any) -> Transports:
        transports = Transports(TransportConfig(**config), self.on_receive, self.on_lost)
        await transports.start()
        return transports
