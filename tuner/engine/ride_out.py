"""A running job rides out a database outage: it pauses at the call that met it, waits
until the database answers, and makes the call again, with its exact budget.

The coordinator makes each Optuna call of a running job through :func:`ride_out`; while the
database is away it probes it (``SELECT 1``, with :mod:`tuner.retry`'s backoff) rather than
repeating the call, for up to ``TUNER_DB_RETRY_S`` in all; then the last error goes up and
the job fails (:mod:`tuner.engine.job_ends` ends what it left once the database is back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tenacity import RetryCallState

from tuner import store
from tuner.retry import Budget, is_database_outage, outage_retrying

if TYPE_CHECKING:
    from tuner.config import Settings

__all__ = ["ride_out", "riding_out"]

#: The pause is the coordinator's: its log says so.
logger = logging.getLogger("tuner.engine.coordinator")

T = TypeVar("T")


def ride_out(call: Callable[[], T], *, url: str, budget_s: float, what: str) -> T:
    """``call()``; when it fails because the database at ``url`` is away, wait until the
    database answers (``SELECT 1`` with backoff, 0.5 s doubling to 8 s) and make the call
    again, for up to ``budget_s`` in all; then the call is made a last time and its error
    goes up.

    ``call`` must be safe to repeat: what it wrote before the connection dropped was rolled
    back, or is written again harmlessly (the coordinator applies a trial's result once and
    Optuna's tell skips a trial already told).
    """
    budget = Budget(budget_s)

    def wait_for_the_database(state: RetryCallState) -> None:
        if state.attempt_number == 1 and state.outcome is not None:
            error = state.outcome.exception()
            logger.warning("%s: the database is away; pausing for up to %.0f s: %s",
                           what, budget_s, " ".join(str(error).split())[:300])
        try:
            outage_retrying(budget, outage=is_database_outage)(store.ping, url)
        except Exception as e:  # still away when the budget is spent: the last call says
            if not is_database_outage(e):
                raise
            return
        logger.info("%s: the database answers again; going on", what)

    return outage_retrying(budget, outage=is_database_outage, wait=False,
                           before_sleep=wait_for_the_database)(call)


def riding_out(settings: Settings, *, what: str) -> Callable[[Callable[[], T]], T]:
    """:func:`ride_out` on ``settings``' database and ``TUNER_DB_RETRY_S``."""

    def ride(call: Callable[[], T]) -> T:
        return ride_out(call, url=settings.database_url, budget_s=settings.db_retry_s,
                        what=what)

    return ride
