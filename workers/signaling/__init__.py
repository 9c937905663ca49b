"""The asyncio signaling service: transports and the LegManager around sipstack.UacCore."""
