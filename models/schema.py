"""The complete schema: imports every table so `metadata` holds them all (Alembic's target)."""

from __future__ import annotations

from models.base import Base
from models.cdrs import Cdr
from models.legs import Leg
from models.outbox import OutboxEvent

metadata = Base.metadata

__all__ = ["Cdr", "Leg", "OutboxEvent", "metadata"]
