"""Riding out a database outage: pause, probe with backoff, make the call again.

DESIGN.md: "A transient database or MLflow outage (up to a minute) is ridden out with retries:
the job pauses and goes on, with its exact budget; a longer one fails the job with a clear
error". The coordinator makes each Optuna call of a running job through :func:`ride_out`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tuner.config import Settings

__all__ = ["is_database_outage", "ride_out", "riding_out"]

logger = logging.getLogger("tuner.engine.coordinator")

T = TypeVar("T")


def is_database_outage(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the database cannot be reached now: a
    refused or dropped connection (SQLAlchemy's OperationalError, an invalidated connection,
    as Optuna's StorageInternalError wraps them, or the store's DatabaseUnavailableError)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from tuner.errors import DatabaseUnavailableError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailableError | OperationalError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def ride_out(call: Callable[[], T], *, url: str, budget_s: float, what: str) -> T:
    """``call()``; when it fails because the database at ``url`` is away, wait until the
    database answers (``SELECT 1`` with backoff, 0.5 s doubling to 8 s) and make the call
    again, for up to ``budget_s`` in all; then the last error goes up.

    ``call`` must be safe to repeat: what it wrote before the connection dropped was rolled
    back, or is written again harmlessly (the coordinator applies a trial's result once and
    Optuna's tell skips a trial already told).
    """
    from tuner import store

    deadline: float | None = None
    while True:
        try:
            return call()
        except Exception as e:
            if not is_database_outage(e):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + budget_s
                logger.warning("%s: the database is away; pausing for up to %.0f s: %s",
                               what, budget_s, " ".join(str(e).split())[:300])
            if now >= deadline:
                raise
            delay = 0.5
            while time.monotonic() < deadline:
                try:
                    store.ping(url)
                except Exception as probe:  # still away: wait
                    if not is_database_outage(probe):
                        raise
                    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    delay = min(delay * 2, 8.0)
                    continue
                logger.info("%s: the database answers again; going on", what)
                break


def riding_out(settings: Settings, *, what: str) -> Callable[[Callable[[], T]], T]:
    """:func:`ride_out` on ``settings``' database and ``TUNER_DB_RETRY_S``."""

    def ride(call: Callable[[], T]) -> T:
        return ride_out(call, url=settings.database_url, budget_s=settings.db_retry_s,
                        what=what)

    return ride
