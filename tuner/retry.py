"""Riding out an outage: which errors say the database or MLflow is away, and how long and
how often a call is made again (on tenacity).

A transient outage of the database or of MLflow (up to a minute) is ridden out: the call is
made again with backoff, 0.5 s doubling to 8 s (:func:`backoff`), for up to a budget counted
from its first failure (:class:`Budget`: ``TUNER_DB_RETRY_S``, ``TUNER_MLFLOW_RETRY_S``); a
longer one raises. Every retry of tuner is built here (:func:`outage_retrying`): the store's
sessions (:func:`tuner.store.retrying`), a running job's Optuna calls
(:func:`tuner.engine.ride_out.ride_out`), the MLflow client of the tracker
(:mod:`tuner.tracking`); and the service's loop and its Ray start-up
(:mod:`tuner.engine.service`), which try again after any error until the server stops
(:func:`until_stopped`).

What is an outage is read off the error and everything that caused it (:func:`causes`):
a database that refuses or drops connections (:func:`is_database_outage`), an MLflow that
cannot be reached or answers that it is failing (:func:`is_mlflow_outage`); an error of the
request itself (a bad query, a 4xx answer) is raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    wait_exponential,
)

from tuner.errors import DatabaseUnavailableError, MlflowUnavailableError

__all__ = ["Budget", "backoff", "causes", "is_database_outage", "is_mlflow_outage",
           "outage_retrying", "root_cause", "until_stopped"]

#: The first wait before a call is made again, and the longest (each wait doubles).
FIRST_WAIT_S, LONGEST_WAIT_S = 0.5, 8.0
#: An MLflow server's answers that say it is failing now, not that the request is wrong.
_MLFLOW_OUTAGE_STATUS = frozenset({429, 500, 503, 504})


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what caused it (``__cause__``, else ``__context__``), and so on down
    the chain; each exception once (a chain can loop)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def root_cause(error: BaseException) -> BaseException:
    """The exception at the bottom of ``error``'s chain (:func:`causes`)."""
    root = error
    for root in causes(error):  # noqa: B007 - the last one is the answer
        pass
    return root


def is_database_outage(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the database cannot be reached now: a
    refused or dropped connection (SQLAlchemy's OperationalError, an invalidated connection,
    as Optuna's StorageInternalError wraps them, or the store's DatabaseUnavailableError)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    return any(
        isinstance(current, DatabaseUnavailableError | OperationalError)
        or (isinstance(current, DBAPIError) and current.connection_invalidated)
        for current in causes(error)
    )


def is_mlflow_outage(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says MLflow cannot be reached now: no connection
    (refused, reset, a host name that does not resolve), a timeout, a tracking server that
    answers it is failing (500, 502 to 504, 429), or the database of a tracking store
    unreachable; not a request MLflow refuses (4xx)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if is_database_outage(error):
        return True
    for current in causes(error):
        if isinstance(current, MlflowUnavailableError):
            return False  # the verdict of a retry that gave up, not a symptom
        if isinstance(current, requests.ConnectionError | requests.Timeout
                      | requests.exceptions.RetryError
                      | requests.exceptions.ChunkedEncodingError
                      | ConnectionError | TimeoutError):
            return True
        if isinstance(current, requests.HTTPError):  # the artifact repository's answers
            response = current.response
            return response is not None and response.status_code in (
                _MLFLOW_OUTAGE_STATUS | {502})
        if isinstance(current, MlflowException) and (
            # What the server answered (a JSON error, or another body: "API request to
            # endpoint ... failed with error code 503"), not an error of the client's own.
            isinstance(current, RestException)
            or str(current).startswith("API request to endpoint")
        ):
            return current.get_http_status_code() in _MLFLOW_OUTAGE_STATUS
    return False


def backoff(first_s: float = FIRST_WAIT_S, longest_s: float = LONGEST_WAIT_S,
            ) -> wait_exponential:
    """The wait before attempt n + 1 (tenacity's ``wait``): ``first_s`` after the first
    failure, doubling after each one, at most ``longest_s``."""
    return wait_exponential(multiplier=first_s, max=longest_s)


class Budget:
    """How long one outage may be ridden out: ``seconds``, counted from the first failure
    (the clock starts at the first call of :meth:`left`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline: float | None = None

    @property
    def started(self) -> bool:
        """Whether a call has failed already (the outage is being ridden out)."""
        return self._deadline is not None

    def left(self) -> float:
        """Seconds left (negative once spent)."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        return self._deadline - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0


def outage_retrying(budget: Budget, *, outage: Callable[[BaseException], bool],
                    stop: Callable[[], bool] | None = None, wait: bool = True,
                    before_sleep: Callable[[RetryCallState], None] | None = None,
                    give_up: Callable[[RetryCallState], Any] | None = None) -> Retrying:
    """A tenacity ``Retrying`` that makes a call again while it fails with an error that
    ``outage`` says is one, after :func:`backoff` (never past the budget; no wait when not
    ``wait``: ``before_sleep`` waits its own way), until ``budget`` is spent or ``stop()``
    (a server shutting down). Then ``give_up(state)`` decides (it may raise), else the last
    error goes up as it was; an error that is no outage goes up at once.

    Example::

        tell = outage_retrying(Budget(60), outage=is_database_outage)
        tell(study.tell, trial, 0.5)
    """
    delays = backoff()

    def stopped(_: RetryCallState) -> bool:
        return budget.spent() or (stop is not None and stop())

    def delay(state: RetryCallState) -> float:
        return min(delays(state), max(0.0, budget.left())) if wait else 0.0

    return Retrying(retry=retry_if_exception(outage), stop=stopped, wait=delay,
                    before_sleep=before_sleep, retry_error_callback=give_up, reraise=True)


def until_stopped(call: Callable[[], None], *, stopped: Callable[[], bool],
                  failed: Callable[[Exception, float], None], first_s: float,
                  longest_s: float, sleep: Callable[[float], object]) -> bool:
    """``call()`` until it goes through, made again after any error with
    :func:`backoff` (``first_s`` doubling to ``longest_s``, waited with ``sleep``), unless
    ``stopped()`` first (it is asked before every attempt); whether it went through.
    ``failed(error, wait)`` hears of each error before the wait."""

    def attempt() -> bool:
        if stopped():
            return False
        call()
        return True

    def before_sleep(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        error = state.outcome.exception()
        assert isinstance(error, Exception)
        failed(error, state.next_action.sleep)

    def pause(seconds: float) -> None:
        sleep(seconds)

    try:
        return Retrying(retry=retry_if_exception_type(Exception),
                        wait=backoff(first_s, longest_s), stop=lambda _: stopped(),
                        sleep=pause, before_sleep=before_sleep)(attempt)
    except RetryError:  # stopped while the call was failing
        return False
