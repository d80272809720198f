"""Engines, sessions and migrations of the jobs database.

One engine per URL and process. Database errors are translated here, once, into
:class:`tuner.errors.TunerError` with a one-line message; passwords never appear in them.

Example:
    >>> upgrade(url)                       # cheap when already at head
    >>> with session_scope(url) as session:
    ...     job = create_job(session, name="digits", task="digits-mlp", spec=spec)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from tuner.errors import TunerError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "VERSION_TABLE", "get_engine", "session_scope", "upgrade"]

#: The Alembic scripts, shipped as package data next to this package.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: Our Alembic version table; Optuna's RDBStorage owns the default ``alembic_version``.
VERSION_TABLE = "tuner_alembic_version"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_upgraded: set[str] = set()


def safe_url(url: str | URL) -> str:
    """The URL as text with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we can find
        return "<unparsable URL>"


def _one_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    return " ".join(str(orig).split())


def get_engine(url: str) -> Engine:
    """The engine of ``url``, created on first use and cached for the process.

    SQLite: the file's folder is created, WAL journal mode and foreign keys are switched on
    for every connection, and a writer waits up to 30 s for a lock. PostgreSQL: connections
    are checked before use (``pool_pre_ping``). A server that cannot be reached raises
    :class:`~tuner.errors.TunerError` ("cannot connect to the jobs database ...").
    """
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as e:
        raise TunerError(f"invalid jobs database URL {url!r}: {_one_line(e)}") from e
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    event.listen(engine, "handle_error", _translate_connect_error)
    return engine


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers (the API) work while the coordinator writes; SQLite leaves foreign
    # keys off unless asked, per connection (https://sqlite.org/foreignkeys.html).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _translate_connect_error(context: ExceptionContext) -> BaseException | None:
    # No connection yet means the failure happened while connecting. A failed pre-ping is
    # left to SQLAlchemy, which reconnects (and comes back here if that fails too).
    if context.connection is not None or context.is_pre_ping or context.engine is None:
        return None
    url = safe_url(context.engine.url)
    return TunerError(
        f"cannot connect to the jobs database {url}: {_one_line(context.original_exception)}"
    )


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session on ``url`` that commits when the block ends and rolls back on an error.

    Objects stay readable after the block (``expire_on_commit=False``). An operational
    database error (lost server, lock timeout, full disk) becomes a one-line
    :class:`~tuner.errors.TunerError`; other errors pass through unchanged.

    Example:
        >>> with session_scope(url) as session:
        ...     job = get_job(session, 7)
        >>> job.state
        'running'
    """
    session = Session(get_engine(url), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except OperationalError as e:
        session.rollback()
        raise TunerError(f"jobs database {safe_url(url)}: {_one_line(e)}") from e
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for our migrations, built in code (no ``alembic.ini`` needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolates '%': double it (URL-encoded passwords contain it).
        rendered = make_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Create or migrate the ``tuner_*`` tables of ``url`` to the newest revision.

    Idempotent, and free after the first call in a process for a URL. Optuna's tables and
    its ``alembic_version`` are left alone; ours are versioned in ``tuner_alembic_version``.
    """
    with _lock:
        if url in _upgraded:
            return
    from alembic import command

    config = alembic_config(url)
    engine = get_engine(url)
    try:
        with engine.begin() as connection:
            # env.py migrates on this connection, so our SQLite pragmas apply.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as e:
        message = f"cannot migrate the jobs database {safe_url(url)}: {_one_line(e)}"
        raise TunerError(message) from e
    with _lock:
        _upgraded.add(url)
