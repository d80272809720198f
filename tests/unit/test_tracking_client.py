"""The tracker's MLflow client against a tracking server that refuses every connection:
retried for its budget, then one clear error, and no pause for the calls after it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from tuner.errors import MlflowUnavailableError
from tuner.tracking._client import RetryingClient

#: Nothing listens on port 9 (discard) here: every connection is refused at once.
AWAY = "http://user:secret@127.0.0.1:9"


def test_an_mlflow_away_for_longer_than_the_budget_fails_once_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = RetryingClient(AWAY, retry_s=0.6)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="tuner.tracking"), \
            pytest.raises(MlflowUnavailableError) as raised:
        client.get_experiment_by_name("job-1-x")
    assert 0.6 <= time.monotonic() - started < 10
    message = str(raised.value)
    assert message.startswith("the MLflow tracking server http://127.0.0.1:9 could not be "
                              "reached for 0.6 s (TUNER_MLFLOW_RETRY_S), so this job's MLflow "
                              "runs are incomplete; get_experiment_by_name: "), message
    assert "Connection refused" in message and "secret" not in message
    assert client.failure is not None and str(client.failure) == message
    assert "MLflow at http://127.0.0.1:9 cannot be reached" in caplog.text
    assert "secret" not in caplog.text

    # MLflow was away too long already: the next call is tried once, without a pause.
    started = time.monotonic()
    with pytest.raises(MlflowUnavailableError, match="could not be reached for 0.6 s"):
        client.search_runs(["1"])
    assert time.monotonic() - started < 0.5


def test_a_request_mlflow_refuses_is_not_retried(tmp_path: Path) -> None:
    client = RetryingClient(f"sqlite:///{tmp_path / 'mlflow.db'}", retry_s=60)
    started = time.monotonic()
    with pytest.raises(MlflowException):
        client.get_run("no-such-run")
    assert time.monotonic() - started < 30 and client.failure is None
