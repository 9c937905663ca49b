"""Declarative base, the constraint naming convention, and portable column types."""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

from sqlalchemy import JSON, CheckConstraint, DateTime, Dialect, MetaData, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# jsonb on PostgreSQL (indexable, compact), plain JSON text elsewhere (the SQLite demo).
JsonDocument = JSON().with_variant(JSONB(), "postgresql")

# Every timestamp is timestamptz: the database never guesses a zone.
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


E = TypeVar("E", bound=enum.Enum)


class TextEnum(TypeDecorator[E], Generic[E]):
    """An enumeration stored as its value in a text column; the CHECK comes from `enum_check`.

    Text (not a native ENUM type) so that adding a value is a CHECK change, not an ALTER TYPE.
    """

    impl = Text
    cache_ok = True

    def __init__(self, enum_class: type[E]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        # Accept the value as text too, but only a known one: a typo fails here, not in SQL.
        return str(self.enum_class(value).value)

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        if value is None:
            return None
        return self.enum_class(value)

    def copy(self, **kw: Any) -> TextEnum[E]:
        return TextEnum(self.enum_class)


def enum_values(enum_class: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_class]


def enum_check(
    column: str, enum_class: type[enum.Enum], *, nullable: bool = False
) -> CheckConstraint:
    """CHECK that `column` holds one of the enumeration's values (named `ck_<table>_<column>`)."""
    quoted = ", ".join(f"'{value}'" for value in enum_values(enum_class))
    condition = f"{column} IN ({quoted})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=column)
