"""The retry module: what is an outage, the cause walk, and the backoff with its budget.

Real errors and real calls that fail a given number of times; the database is a SQLite file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from sqlalchemy.exc import DBAPIError, OperationalError

from tuner import store
from tuner.engine.ride_out import ride_out
from tuner.errors import DatabaseUnavailableError, MlflowUnavailableError
from tuner.retry import (
    Budget,
    causes,
    is_database_outage,
    is_mlflow_outage,
    outage_retrying,
    root_cause,
    until_stopped,
)


def chained(*errors: BaseException) -> BaseException:
    """``errors[0]`` raised from ``errors[1]``, raised from ``errors[2]``..., as raised."""
    for upper, lower in zip(errors, errors[1:], strict=False):
        upper.__cause__ = lower
    return errors[0]


class Flaky:
    """A call that fails with ``error`` its first ``failures`` times, then returns 42."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return 42

    def action(self) -> None:
        """The call as an action (``until_stopped`` makes calls whose result nobody reads)."""
        self()


def test_causes_walk_the_cause_then_the_context_once_each() -> None:
    bottom = ConnectionRefusedError(111, "Connection refused")
    middle = OSError("send failed")
    middle.__context__ = bottom
    top = chained(RuntimeError("tell failed"), middle)
    assert list(causes(top)) == [top, middle, bottom]
    assert root_cause(top) is bottom
    looped = ValueError("a")
    looped.__context__ = KeyError("b")
    looped.__context__.__context__ = looped
    assert len(list(causes(looped))) == 2


def test_what_is_a_database_outage() -> None:
    refused = OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert is_database_outage(chained(RuntimeError("optuna"), refused))
    assert is_database_outage(DatabaseUnavailableError("jobs database away"))
    dropped = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_database_outage(dropped)
    assert not is_database_outage(DBAPIError("SELECT 1", {}, Exception("syntax")))
    assert not is_database_outage(ValueError("bad value"))


def test_what_is_an_mlflow_outage() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert is_mlflow_outage(chained(MlflowException("API request failed"), refused))
    assert is_mlflow_outage(requests.ConnectionError("no route"))
    assert is_mlflow_outage(RestException({"error_code": "TEMPORARILY_UNAVAILABLE",
                                           "message": "busy"}))
    assert not is_mlflow_outage(RestException({"error_code": "INVALID_PARAMETER_VALUE",
                                               "message": "no such run"}))
    # A retry that gave up is its verdict, not a symptom to retry.
    assert not is_mlflow_outage(chained(MlflowUnavailableError("gave up"), refused))
    assert is_mlflow_outage(OperationalError("SELECT 1", {}, Exception("refused")))
    assert not is_mlflow_outage(ValueError("bad metric"))


def test_an_outage_shorter_than_the_budget_is_ridden_out_with_backoff() -> None:
    call = Flaky(ConnectionError("away"), failures=2)
    started = time.monotonic()
    assert outage_retrying(Budget(30), outage=is_mlflow_outage)(call) == 42
    assert call.calls == 3
    assert 1.4 <= time.monotonic() - started < 5  # 0.5 s, then 1 s


def test_a_longer_outage_raises_its_last_error_within_the_budget() -> None:
    call = Flaky(ConnectionError("away"), failures=1000)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="away"):
        outage_retrying(Budget(0.7), outage=is_mlflow_outage)(call)
    assert 0.7 <= time.monotonic() - started < 3
    assert call.calls == 3  # at once, after 0.5 s, after the 0.2 s left


def test_an_error_that_is_no_outage_is_raised_at_once() -> None:
    call = Flaky(ValueError("bad request"), failures=1)
    with pytest.raises(ValueError, match="bad request"):
        outage_retrying(Budget(30), outage=is_mlflow_outage)(call)
    assert call.calls == 1


def test_stop_ends_the_waiting_early() -> None:
    call = Flaky(ConnectionError("away"), failures=1000)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        outage_retrying(Budget(30), outage=is_mlflow_outage, stop=lambda: call.calls >= 2)(call)
    assert call.calls == 2 and time.monotonic() - started < 3


def test_the_budget_counts_from_the_first_failure() -> None:
    budget = Budget(10)
    assert not budget.started
    time.sleep(0.2)
    assert 9.7 < budget.left() <= 10 and budget.started and not budget.spent()


def test_until_stopped_tries_again_after_any_error_until_the_call_goes_through() -> None:
    call = Flaky(RuntimeError("Ray is not up"), failures=3)
    heard: list[tuple[str, float]] = []
    waits: list[float] = []
    assert until_stopped(call.action, stopped=lambda: False,
                         failed=lambda error, wait: heard.append((str(error), wait)),
                         first_s=1.0, longest_s=2.0, sleep=waits.append)
    assert call.calls == 4
    assert heard == [("Ray is not up", 1.0), ("Ray is not up", 2.0), ("Ray is not up", 2.0)]
    assert waits == [1.0, 2.0, 2.0]


def test_until_stopped_gives_up_when_stopped() -> None:
    call = Flaky(RuntimeError("Ray is not up"), failures=1000)
    assert not until_stopped(call.action, stopped=lambda: call.calls >= 2,
                             failed=lambda e, w: None, first_s=1.0, longest_s=2.0,
                             sleep=lambda seconds: None)
    assert call.calls == 2
    never = Flaky(RuntimeError("Ray is not up"), failures=0)
    assert not until_stopped(never.action, stopped=lambda: True, failed=lambda e, w: None,
                             first_s=1.0, longest_s=2.0, sleep=lambda seconds: None)
    assert never.calls == 0


def test_the_store_runs_work_again_while_the_database_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    work = Flaky(DatabaseUnavailableError("jobs database: connection refused"), failures=1)
    with caplog.at_level(logging.INFO, logger="tuner.store"):
        assert store.retrying(url, lambda session: work(), what="job 7") == 42
    assert "job 7: jobs database: connection refused; retrying for up to 60 s" in caplog.text
    assert "job 7: the jobs database answers again (attempt 2)" in caplog.text
    with pytest.raises(DatabaseUnavailableError):
        store.retrying(url, lambda session: Flaky(DatabaseUnavailableError("away"), 99)(),
                       budget_s=0.3)


def test_a_job_pauses_until_the_database_answers_and_makes_the_call_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    call = Flaky(DatabaseUnavailableError("jobs database: connection refused"), failures=1)
    with caplog.at_level(logging.INFO, logger="tuner.engine.coordinator"):
        assert ride_out(call, url=url, budget_s=60, what="job 1") == 42
    assert call.calls == 2
    assert "job 1: the database is away; pausing for up to 60 s" in caplog.text
    assert "job 1: the database answers again; going on" in caplog.text
    # Away for longer than the budget: the call is made a last time, and its error goes up.
    away = Flaky(DatabaseUnavailableError("still away"), failures=1000)
    with pytest.raises(DatabaseUnavailableError, match="still away"):
        ride_out(away, url="postgresql+psycopg://nobody@127.0.0.1:9/none", budget_s=0.5,
                 what="job 2")
    assert away.calls == 2
