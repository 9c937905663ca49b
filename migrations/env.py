"""Alembic environment: the outbound models as target, the URL from the caller or environment."""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL

from models.db import database_url
from models.schema import metadata

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> URL:
    given = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return database_url(given)


def _configure(**options: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=False,
        render_as_batch=False,
        **options,
    )


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (`outbound migrate --sql`)."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _configure(connection=given)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
