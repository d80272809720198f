"""Alembic environment of the ``tuner_*`` tables.

We share the database with Optuna's RDBStorage, which owns the unprefixed tables and the
default ``alembic_version`` table. So: our version table is ``tuner_alembic_version``, and
autogenerate looks at ``tuner_*`` tables only (it would otherwise offer to drop Optuna's).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, text

from tuner.config import get_settings
from tuner.store._engine import VERSION_TABLE, get_engine
from tuner.store._models import Base, include_name, include_object

# Any constant works; it serializes concurrent upgrades of one PostgreSQL database.
_PG_LOCK_KEY = 0x7475_6E65  # "tune"

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters tables by copying them
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        **kwargs,
    )


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url

    return get_settings().database_url


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes starting at once (API and coordinator) must not both create tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # tuner.store.upgrade() passes its own connection
        _run_on(connection)
        return
    # The `alembic` command: same engine setup (SQLite pragmas, folders) as the application.

    with get_engine(_url()).begin() as connection:
        _run_on(connection)


if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
