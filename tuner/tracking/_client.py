"""The MLflow client of a job's tracker: every call retried while MLflow is away, and the
calls that would write twice when repeated (creating a run or an experiment, logging a
table) made safe to repeat."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tenacity import RetryCallState

from tuner.errors import MlflowUnavailableError
from tuner.retry import Budget, is_mlflow_outage, outage_retrying, root_cause

__all__ = ["BATCH_LIMIT", "CREATE_TAG", "RetryingClient"]

logger = logging.getLogger(__name__)

BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch call
CREATE_TAG = "tuner.create_id"  # makes creating a run safe to repeat

T = TypeVar("T")


class RetryingClient:
    """An MLflow client (``mlflow.MlflowClient``, made on first use) whose every call is
    made again, with backoff (0.5 s doubling to 8 s, :mod:`tuner.retry`), while it fails
    because MLflow cannot be reached (:func:`tuner.retry.is_mlflow_outage`), for up to
    ``retry_s``; then :attr:`failure` is set and raised, and later calls are tried once.
    Creating a run or an experiment and logging a table are made safe to repeat here; the
    other calls the tracker makes are (metrics keep their timestamps, the rest overwrites).
    """

    def __init__(self, tracking_uri: str, retry_s: float) -> None:
        self.tracking_uri = tracking_uri
        self.uri = _public_uri(tracking_uri)  # for messages
        self.retry_s = retry_s
        self.failure: MlflowUnavailableError | None = None
        self._lock = threading.Lock()
        self._client: Any = None  # made on first use: importing MLflow takes seconds

    @property
    def client(self) -> Any:
        """The MLflow client (``mlflow.MlflowClient``), created on first use; its calls are
        made once."""
        if self._client is None:
            from mlflow import MlflowClient

            # MLflow announces the creation of its tables at INFO (its import sets the
            # level); the progress bars are enough.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
            if self.tracking_uri.startswith(("http://", "https://")):
                # Calls are retried here, within retry_s (the package's docstring); MLflow's
                # own retries would hold one call ~4 minutes and repeat a POST.
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            method = getattr(self.client, name)
            return self.retry(lambda: method(*args, **kwargs), what=name)

        return call

    def retry(self, call: Callable[[], T], *, what: str) -> T:
        """``call()``, made again while MLflow cannot be reached, for up to ``retry_s``."""
        budget = Budget(self.retry_s)

        def pausing(state: RetryCallState) -> None:
            if state.attempt_number == 1 and state.outcome is not None:
                logger.warning("MLflow at %s cannot be reached (%s); retrying for up to "
                               "%g s (TUNER_MLFLOW_RETRY_S)", self.uri,
                               _cause(_error_of(state)), self.retry_s)

        def give_up(state: RetryCallState) -> T:
            error = _error_of(state)
            with self._lock:
                failure = self.failure
            if failure is not None and not budget.spent():  # away too long already: no pause
                raise MlflowUnavailableError(str(failure)) from error
            raise self._give_up(what, error) from error

        result = outage_retrying(
            budget, outage=is_mlflow_outage, stop=lambda: self.failure is not None,
            before_sleep=pausing, give_up=give_up)(call)
        if budget.started:
            logger.info("MLflow at %s answers again; going on", self.uri)
        return result

    def _give_up(self, what: str, error: Exception) -> MlflowUnavailableError:
        failure = MlflowUnavailableError(
            f"the MLflow tracking server {self.uri} could not be reached for "
            f"{self.retry_s:g} s (TUNER_MLFLOW_RETRY_S), so this job's MLflow runs are "
            f"incomplete; {what}: {_cause(error)}"
        )
        with self._lock:
            if self.failure is None:
                self.failure = failure
                logger.error("%s", failure)
            return self.failure

    def create_run(self, experiment_id: str, *, run_name: str,
                   tags: Mapping[str, str]) -> Any:
        """``create_run``, safe to repeat: its ``tuner.create_id`` finds the run an attempt
        whose answer was lost did create."""
        create_id = uuid.uuid4().hex
        tags = {**tags, CREATE_TAG: create_id}
        attempted = False

        def create() -> Any:
            nonlocal attempted
            client = self.client
            if attempted:
                found = client.search_runs(
                    [experiment_id], filter_string=f"tags.`{CREATE_TAG}` = '{create_id}'",
                    max_results=1)
                if found:
                    return found[0]
            attempted = True
            return client.create_run(experiment_id, run_name=run_name, tags=tags)

        return self.retry(create, what=f"creating the run {run_name!r}")

    def create_experiment(self, name: str, *, artifact_location: str | None = None,
                          tags: Mapping[str, str]) -> str:
        """``create_experiment``, safe to repeat: its name, unique, is looked up first."""
        attempted = False

        def create() -> str:
            nonlocal attempted
            client = self.client
            if attempted:
                found = client.get_experiment_by_name(name)
                if found is not None:
                    return str(found.experiment_id)
            attempted = True
            return str(client.create_experiment(name, artifact_location=artifact_location,
                                                tags=dict(tags)))

        return self.retry(create, what=f"creating the experiment {name!r}")

    def log_batches(self, run_id: str, *, metrics: list[Any] | None = None,
                    params: Mapping[str, Any] | None = None,
                    tags: Mapping[str, str] | None = None) -> None:
        """``log_batch`` as often as it takes (MLflow caps one at 1000 metrics, 100 params
        and 100 tags)."""
        from mlflow.entities import Param, RunTag

        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        metric_list = list(metrics or [])
        while metric_list or param_list or tag_list:
            self.log_batch(run_id, metrics=metric_list[:BATCH_LIMIT], params=param_list[:100],
                           tags=tag_list[:100])
            metric_list, param_list, tag_list = (
                metric_list[BATCH_LIMIT:], param_list[100:], tag_list[100:]
            )

    def log_table(self, run_id: str, columns: Mapping[str, list[Any]], name: str) -> None:
        """What ``log_table`` writes (split-oriented JSON, a table in the UI), safe to
        repeat: ``log_table`` appends to a table that is there already."""
        rows = [[_json_value(value) for value in row]
                for row in zip(*columns.values(), strict=True)]
        table = json.dumps({"columns": list(columns), "data": rows}, allow_nan=False)
        self.log_text(run_id, table, name)
        logged = json.loads(self.get_run(run_id).data.tags.get("mlflow.loggedArtifacts", "[]"))
        entry = {"path": name, "type": "table"}
        if entry not in logged:
            self.set_tag(run_id, "mlflow.loggedArtifacts", json.dumps([*logged, entry]))


def _public_uri(uri: str) -> str:
    """``uri`` without a user name and password."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


def _cause(error: BaseException) -> str:
    """The first line of what went wrong at the bottom of ``error``'s chain, e.g.
    ``ConnectionRefusedError: [Errno 111] Connection refused``."""
    root = root_cause(error)
    text = " ".join(str(root).split())
    return f"{type(root).__name__}: {text[:200]}"


def _error_of(state: RetryCallState) -> Exception:
    """The error the last attempt of a retried call failed with."""
    assert state.outcome is not None
    error = state.outcome.exception()
    assert isinstance(error, Exception)
    return error


def _json_value(value: Any) -> Any:
    """A table cell as JSON: NumPy scalars as Python's, NaN and inf as null."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
