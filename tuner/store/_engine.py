"""Engines, sessions and migrations of the jobs database.

One engine per URL and process. Database errors are translated here, once, into
:class:`tuner.errors.TunerError` with a one-line message; passwords never appear in them.

Example:
    >>> upgrade(url)                       # cheap when already at head
    >>> with session_scope(url) as session:
    ...     job = create_job(session, name="digits", task="digits-mlp", spec=spec)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry
from tenacity import RetryCallState

from tuner.errors import DatabaseUnavailableError, TunerError
from tuner.retry import Budget, outage_retrying

__all__ = ["DEFAULT_RETRY_S", "MIGRATIONS_DIR", "VERSION_TABLE", "get_engine", "ping",
           "retrying", "session_scope", "upgrade"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How long work on the jobs database is retried while the database is unreachable
#: (``TUNER_DB_RETRY_S``): docs/design.md's "an outage of up to a minute is ridden out".
DEFAULT_RETRY_S = 60.0

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
    return DatabaseUnavailableError(
        f"cannot connect to the jobs database {url}: {_one_line(context.original_exception)}"
    )


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session on ``url`` that commits when the block ends and rolls back on an error.

    Objects stay readable after the block (``expire_on_commit=False``). An operational
    database error (lost server, lock timeout, full disk) or a dropped connection becomes a
    one-line :class:`~tuner.errors.DatabaseUnavailableError`; other errors pass through
    unchanged. :func:`retrying` runs a block again while the database is away.

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
    except DBAPIError as e:
        _rollback(session)
        if isinstance(e, OperationalError) or e.connection_invalidated:
            raise DatabaseUnavailableError(f"jobs database {safe_url(url)}: {_one_line(e)}") from e
        raise
    except BaseException:
        _rollback(session)
        raise
    finally:
        _close(session)


def _rollback(session: Session) -> None:
    # Rolling back on a connection the server dropped fails too; the error that matters is
    # the first one.
    try:
        session.rollback()
    except DBAPIError:
        pass


def _close(session: Session) -> None:
    try:
        session.close()
    except DBAPIError:
        pass


def retrying(url: str, work: Callable[[Session], T], *, budget_s: float = DEFAULT_RETRY_S,
             what: str = "jobs database work",
             stop: Callable[[], bool] | None = None) -> T:
    """``work(session)`` in a :func:`session_scope`, run again with backoff (0.5 s doubling
    to 8 s, :mod:`tuner.retry`) while the database is unreachable, for up to ``budget_s``.

    ``work`` must be safe to run again: a failed attempt was rolled back whole. ``stop``
    returning ``True`` ends the waiting early (a server shutting down).

    Raises:
        DatabaseUnavailableError: the database was still away after ``budget_s``.

    Example:
        >>> retrying(url, lambda s: store.get_job(s, 7).state, what="job 7")
        'running'
    """

    def attempt() -> T:
        with session_scope(url) as session:
            return work(session)

    def pausing(state: RetryCallState) -> None:
        if state.attempt_number == 1 and state.outcome is not None:
            logger.warning("%s: %s; retrying for up to %.0f s", what,
                           state.outcome.exception(), budget_s)

    policy = outage_retrying(
        Budget(budget_s), outage=lambda e: isinstance(e, DatabaseUnavailableError), stop=stop,
        before_sleep=pausing)
    result = policy(attempt)
    attempts = policy.statistics.get("attempt_number", 1)
    if attempts > 1:
        logger.info("%s: the jobs database answers again (attempt %d)", what, attempts)
    return result


def ping(url: str) -> None:
    """``SELECT 1`` on ``url``: returns when the database answers.

    Raises:
        DatabaseUnavailableError: it does not.
    """
    with session_scope(url) as session:
        session.execute(text("SELECT 1"))


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for our migrations, built in code (no ``alembic.ini`` needed)."""
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

    config = alembic_config(url)
    engine = get_engine(url)
    try:
        with engine.begin() as connection:
            # env.py migrates on this connection, so our SQLite pragmas apply.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as e:
        message = f"cannot migrate the jobs database {safe_url(url)}: {_one_line(e)}"
        raise DatabaseUnavailableError(message) from e
    with _lock:
        _upgraded.add(url)
