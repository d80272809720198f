"""Every MLflow call of tuner lives here.

One experiment per job; a parent run per job (``tuner.level=job``), a nested run per
optimizer (``optimizer``), a nested run per trial (``trial``) and per multi-seed re-run of
the best setting (``final``). Trial and final runs carry ``tuner.job``, ``tuner.optimizer``,
``tuner.trial`` and ``tuner.state`` so the UI can filter and a script can join with Optuna.

Logging is off the trial's critical path: a single background thread owns the client and
executes the calls in order, and a trial's per-epoch metrics go out in one ``log_batch``
when the trial ends (against a tracking server one call costs ~55 ms, DESIGN.md).

An MLflow outage (the tracking server stopped, restarting, answering 5xx) is ridden out: a
call that fails because MLflow cannot be reached (:func:`is_mlflow_outage`) is made again,
with backoff (0.5 s doubling to 8 s), for up to ``TUNER_MLFLOW_RETRY_S``, in order; the
logging thread's queue grows meanwhile and the job's end waits for it. Every call is safe to
repeat: a run is created with a ``tuner.create_id`` tag and looked up by it before it is
created again, metrics keep their timestamps (MLflow skips a metric it has), the rest
overwrites. MLflow's own HTTP retries are off (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` unless
set): on a refused connection they would hold one call ~4 minutes, past the budget, and
repeat a POST whose answer was lost. A longer outage makes :attr:`JobTracker.failure` an
:class:`MlflowUnavailableError` (later calls are tried once) that :meth:`JobTracker.check`
raises: the job fails (:mod:`tuner.engine.jobs`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from tenacity import RetryCallState

from tuner.errors import MlflowUnavailableError
from tuner.retry import Budget, is_mlflow_outage, outage_retrying, root_cause

__all__ = ["LEADERBOARD_VIEW", "JobTracker", "close_running",
           "experiment_link", "has_leaderboard_view",
           "leaderboard_view_state", "run_name", "ui_base"]

logger = logging.getLogger(__name__)

_BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch call
_CREATE_TAG = "tuner.create_id"  # makes creating a run safe to repeat

T = TypeVar("T")


#: The columns of the leaderboard table artifact -> the leaderboard row's keys.
_TABLE_COLUMNS = {
    "rank": "rank", "optimizer": "optimizer", "final_mean": "mean", "final_std": "std",
    "final_runs": "seeds", "ci95": "ci95", "p_vs_leader": "p_vs_leader",
    "tied_with_leader": "tied_with_leader", "best": "best", "best_trial": "trial",
    "lr": "lr", "batch_size": "batch_size",
}


def run_name(optimizer: str, number: int, params: Mapping[str, Any]) -> str:
    """Short names first (the Run Name column is narrow): ``adam #17 lr=1.2e-03 bs=64``."""
    parts = [f"{optimizer} #{number}"]
    if "lr" in params:
        parts.append(f"lr={float(params['lr']):.1e}")
    if "batch_size" in params:
        parts.append(f"bs={params['batch_size']}")
    return " ".join(parts)


def ui_base(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000) -> str:
    """Where the MLflow UI of a tracking store is: the server itself, or `tuner ui`'s."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{host}:{port}"


#: The key of the view every finished job saves on its experiment (``Views`` in the UI).
LEADERBOARD_VIEW = "leaderboard"
_VIEW_TAG = "mlflow.sharedViewState."


def experiment_link(base_url: str, experiment_id: str, *, leaderboard: bool = False) -> str:
    """The link that opens a job on its Runs table in the model-training view.

    With ``leaderboard``, it opens the job's saved view (:func:`leaderboard_view_state`): the
    job run and every optimizer run first, in rank order, with their results as columns.
    """
    link = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}"
    if leaderboard:
        # The Runs tab itself: the redirect from the experiment's page drops the view's key.
        return f"{link}/runs?workflowType=machine_learning&viewStateShareKey={LEADERBOARD_VIEW}"
    return f"{link}?workflowType=machine_learning"


def leaderboard_view_state(metric: str, *, now_ms: int | None = None) -> str:
    """The Runs-table view a finished job saves, as the MLflow 3.17 UI stores a saved view.

    The shape was read off a view saved with the UI's ``Views → Save as new view``: the tag
    ``mlflow.sharedViewState.<key>`` holds ``{"name", "createdAt", "updatedAt", "state"}``,
    ``state`` being ``"deflate;"`` + base64 of the zlib-compressed search facets and table
    state. Sorting by a metric also makes the table flat (the UI nests child runs only when
    sorted by start time), so the job run (``rank`` 0) and its optimizer runs (``rank`` 1..n)
    come first, in order, and the server sends them in the first page whatever the number of
    runs. Their results are columns whose width shows every digit.
    """
    import base64
    import json
    import zlib

    columns = ["metrics.`rank`", f"metrics.`final_mean_{metric}`",
               f"metrics.`final_std_{metric}`", f"metrics.`best_{metric}`"]
    state = {
        "searchFilter": "",
        "orderByKey": "metrics.`rank`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        # Widths apply to the columns listed in columnOrder (the UI's applyColumnState).
        "columnOrder": ["attributes.`Run Name`", *columns, "runDateAndNestInfo", "duration"],
        "columnWidths": {"attributes.`Run Name`": 280, "metrics.`rank`": 70,
                         **{column: 170 for column in columns[1:]}},
        "runsHiddenMode": "FIRST_10_RUNS",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                  "selectedXAxisMetricKey": ""},
    }
    packed = base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    now = _now_ms() if now_ms is None else now_ms
    return json.dumps({"name": LEADERBOARD_VIEW, "createdAt": now, "updatedAt": now,
                       "state": f"deflate;{packed}"})


def has_leaderboard_view(tracking_uri: str, experiment_id: str) -> bool:
    """Whether a job's experiment has its saved leaderboard view (a job that succeeded)."""
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        experiment = MlflowClient(tracking_uri=tracking_uri).get_experiment(experiment_id)
    except Exception as e:  # noqa: BLE001 - the plain link still opens the job
        logger.info("cannot read experiment %s: %s", experiment_id, e)
        return False
    return f"{_VIEW_TAG}{LEADERBOARD_VIEW}" in experiment.tags


def _now_ms() -> int:
    return int(time.time() * 1000)


class JobTracker:
    """The MLflow side of one job.

    Args:
        tracking_uri: Where MLflow stores runs.
        artifact_root: Artifact location of a new experiment (``None``: the server decides).
        job_id: The job's id in the jobs table.
        job_name: Its name; the experiment is ``job-<id>-<name>``.
        retry_s: How long a call is retried while MLflow cannot be reached
            (``None``: ``TUNER_MLFLOW_RETRY_S``).
    """

    def __init__(self, tracking_uri: str, artifact_root: str | None, *, job_id: int,
                 job_name: str, retry_s: float | None = None) -> None:
        from tuner.config import get_settings

        self._client: Any = None  # made on first use: importing MLflow takes seconds
        self.tracking_uri = tracking_uri
        retry_s = get_settings().mlflow_retry_s if retry_s is None else retry_s
        self.artifact_root = artifact_root
        self.job_id = job_id
        self.experiment_name = f"job-{job_id}-{job_name}"
        self.experiment_id = ""
        self.job_run_id = ""
        self.optimizer_runs: dict[str, str] = {}
        self._runs: dict[str, str] = {}  # trial key -> run id, written by the logging thread
        self._adopted: set[str] = set()  # trial keys of runs an earlier coordinator began
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-mlflow")
        self._pending: list[Future[Any]] = []
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.resumed = False
        #: The client through which every call is made: retried while MLflow is away.
        self.mlflow: Any = _RetryingClient(lambda: self.client, tracking_uri, retry_s)

    @property
    def client(self) -> Any:
        """The MLflow client (``mlflow.MlflowClient``), created on first use."""
        if self._client is None:
            from mlflow import MlflowClient

            # MLflow announces the creation of its tables at INFO (its import sets the
            # level); the progress bars are enough.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
            if self.tracking_uri.startswith(("http://", "https://")):
                # Calls are retried here, within retry_s (module docstring); MLflow's own
                # retries would hold one call ~4 minutes and repeat a POST.
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- the job and its optimizers (synchronous: done once, before any trial) -------------

    def start(self, *, spec: Mapping[str, Any], optimizers: Iterable[str]) -> None:
        experiment = self.mlflow.get_experiment_by_name(self.experiment_name)
        self.resumed = experiment is not None  # a new experiment has no runs to look up
        if experiment is None:
            self.experiment_id = self.mlflow.create_experiment(
                self.experiment_name,
                artifact_location=(
                    f"{self.artifact_root}/{self.experiment_name}" if self.artifact_root else None
                ),
                tags={
                    "mlflow.experimentKind": "custom_model_development",
                    "tuner.job": str(self.job_id),
                    "mlflow.note.content": (
                        f"tuner job {self.job_id}: {', '.join(optimizers)} on {spec['task']}"
                    ),
                },
            )
        else:
            self.experiment_id = experiment.experiment_id
        # A resumed job (its coordinator was restarted) keeps its job and optimizer runs.
        existing = self.runs("job") + self.runs("optimizer") if self.resumed else []
        by_level = {(r.data.tags["tuner.level"], r.data.tags.get("tuner.optimizer")): r
                    for r in existing}
        job_run = by_level.get(("job", None))
        if job_run is None:
            job_run = self.mlflow.create_run(
                self.experiment_id,
                run_name=f"job {self.job_id} {spec.get('name', '')}".strip(),
                tags={"tuner.level": "job", "tuner.job": str(self.job_id),
                      "tuner.task": str(spec["task"])},
            )
            self.mlflow.log_batches(job_run.info.run_id, params=_flatten(spec))
        elif job_run.info.status != "RUNNING":
            self.mlflow.update_run(job_run.info.run_id, status="RUNNING")
        self.job_run_id = job_run.info.run_id
        for name in optimizers:
            run = by_level.get(("optimizer", name))
            if run is None:
                run = self.mlflow.create_run(
                    self.experiment_id,
                    run_name=name,
                    tags={"mlflow.parentRunId": self.job_run_id, "tuner.level": "optimizer",
                          "tuner.job": str(self.job_id), "tuner.optimizer": name},
                )
            self.optimizer_runs[name] = run.info.run_id

    def runs(self, level: str) -> list[Any]:
        """Every run of this job's experiment at one level (all pages)."""
        if not self.resumed:
            return []
        runs: list[Any] = []
        token = None
        while True:
            page = self.mlflow.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`tuner.level` = '{level}' and tags.`tuner.job` = "
                              f"'{self.job_id}'",
                max_results=5000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def recorded_runs(self, level: str) -> dict[tuple[str, int], Any]:
        """``(optimizer, trial number) -> Run`` of the runs already recorded at ``level``."""
        return {(r.data.tags["tuner.optimizer"], int(r.data.tags["tuner.trial"])): r
                for r in self.runs(level)}

    def adopt(self, key: str, run_id: str) -> None:
        """Take over a run recorded by an earlier coordinator of this job: ending it
        (:meth:`run_finished`) logs only the epochs it does not have yet."""
        self._runs[key] = run_id
        self._adopted.add(key)

    # -- trials (asynchronous, in order, on the logging thread) ----------------------------

    def run_started(self, key: str, *, optimizer: str, level: str, number: int,
                    name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """A trial (``level="trial"``) or final re-run (``"final"``) has begun."""
        all_tags = {
            "mlflow.parentRunId": self.optimizer_runs[optimizer],
            "tuner.level": level,
            "tuner.job": str(self.job_id),
            "tuner.optimizer": optimizer,
            "tuner.trial": str(number),
            "tuner.state": "RUNNING",
            **tags,
        }

        def create() -> None:
            run = self.mlflow.create_run(self.experiment_id, run_name=name, tags=all_tags)
            self._runs[key] = run.info.run_id
            self.mlflow.log_batches(run.info.run_id, params=params)

        self._submit(create)

    def run_finished(self, key: str, *, state: str, epochs: Sequence[Mapping[str, Any]],
                     tags: Mapping[str, str] | None = None,
                     summary: Mapping[str, float] | None = None) -> None:
        """Log a run's per-epoch metrics in one batch and end it with its final state.

        ``state`` is ``COMPLETE``, ``PRUNED``, ``FAIL`` or ``DIVERGED``; MLflow's run status
        is FINISHED for the first two and FAILED otherwise.
        """
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = [
            Metric(key=name, value=_finite(value), timestamp=now, step=int(report["epoch"]))
            for report in epochs
            for name, value in report["metrics"].items()
        ]
        metrics += [Metric(key=k, value=_finite(v), timestamp=now, step=0)
                    for k, v in (summary or {}).items()]
        all_tags = {"tuner.state": state, **(tags or {})}
        status = "FINISHED" if state in ("COMPLETE", "PRUNED") else "FAILED"

        def finish() -> None:
            run_id = self._runs.get(key)
            if run_id is None:
                return  # its creation failed and was reported already
            new = self._missing(run_id, metrics) if key in self._adopted else metrics
            self.mlflow.log_batches(run_id, metrics=new, tags=all_tags)
            self.mlflow.set_terminated(run_id, status=status)

        self._submit(finish)

    def tag(self, key: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run (in order, on the logging thread)."""

        def set_tags() -> None:
            run_id = self._runs.get(key)
            if run_id is not None:
                self.mlflow.log_batches(run_id, tags=tags)

        self._submit(set_tags)

    def run_id(self, key: str) -> str | None:
        """The MLflow run of a trial key, once the logging thread has created it."""
        self.flush()
        return self._runs.get(key)

    # -- the end ---------------------------------------------------------------------------

    def log_job_params(self, params: Mapping[str, Any]) -> None:
        """Add parameters to the job run (e.g. what the learning-rate range test found)."""
        run_id = self.job_run_id
        self._submit(lambda: self.mlflow.log_batches(run_id, params=params))

    def log_optimizer(self, optimizer: str, *, metrics: Mapping[str, float],
                      params: Mapping[str, Any], headline: str | None = None,
                      status: str = "FINISHED") -> None:
        """End an optimizer's run. ``headline`` goes into its name: the Runs table shows no
        metric column until the user picks one, but it always shows the name."""
        run_id = self.optimizer_runs[optimizer]

        def log() -> None:
            self.mlflow.log_batches(run_id, params=params, metrics=_metrics(metrics))
            if headline:
                self.mlflow.update_run(run_id, name=f"{optimizer} {headline}")
            self.mlflow.set_terminated(run_id, status=status)

        self._submit(log)

    def finish_job(self, *, status: str, metrics: Mapping[str, float],
                   artifacts: Mapping[str, str] | None = None,
                   files: Iterable[str] = (), headline: str | None = None) -> None:
        """End the job run: summary metrics, text artifacts (name -> content) and files;
        ``headline`` is appended to its name (the winner, visible before any click)."""
        self.flush()
        self.mlflow.log_batches(self.job_run_id, metrics=_metrics(metrics))
        if headline:
            run = self.mlflow.get_run(self.job_run_id)
            self.mlflow.update_run(self.job_run_id, name=f"{run.info.run_name} · {headline}")
        for name, content in (artifacts or {}).items():
            self.mlflow.log_text(self.job_run_id, content, name)
        for path in files:
            self.mlflow.log_artifact(self.job_run_id, path)
        for run_id in self.optimizer_runs.values():
            run = self.mlflow.get_run(run_id)
            if run.info.status == "RUNNING":
                self.mlflow.set_terminated(run_id, status=status)
        self.mlflow.set_terminated(self.job_run_id, status=status)

    def publish_leaderboard(self, rows: Sequence[Mapping[str, Any]], *, metric: str) -> None:
        """What the Runs table opens on (:func:`experiment_link` with ``leaderboard``).

        The job run gets ``rank`` 0 (the optimizer runs have their rank already), the
        experiment the saved view ``leaderboard``, and the job run the leaderboard as an
        MLflow table (``leaderboard_table.json``, shown as a table in the run's artifacts).
        """
        self.flush()
        columns: dict[str, list[Any]] = {key: [] for key in _TABLE_COLUMNS}
        for row in rows:
            for key, source in _TABLE_COLUMNS.items():
                columns[key].append(row.get(source))
        try:
            self.mlflow.log_batches(self.job_run_id, metrics=_metrics({"rank": 0.0}))
            self.mlflow.log_table(self.job_run_id, columns, "leaderboard_table.json")
            # Last: the link to the view is printed only when all of it is there.
            self.mlflow.set_experiment_tag(self.experiment_id,
                                           f"{_VIEW_TAG}{LEADERBOARD_VIEW}",
                                           leaderboard_view_state(metric))
        except Exception as e:  # noqa: BLE001 - the job run is ended either way
            logger.warning("MLflow: could not save the leaderboard view: %s", e)
            self.errors.append(str(e))

    def log_files(self, paths: Iterable[Path], *, artifact_path: str) -> None:
        """Log files (e.g. the report's PNGs) as artifacts of the job run."""
        for path in paths:
            self.mlflow.log_artifact(self.job_run_id, str(path), artifact_path=artifact_path)

    def flush(self) -> None:
        """Wait until every queued MLflow call has been made."""
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        self.flush()
        self._executor.shutdown(wait=True)

    @property
    def failure(self) -> MlflowUnavailableError | None:
        """Set once a call could not be made within ``retry_s``: the runs are incomplete."""
        return cast("MlflowUnavailableError | None", self.mlflow.failure)

    def check(self) -> None:
        """Raise :attr:`failure` if a call of this job could not be made: MLflow was away
        longer than ``TUNER_MLFLOW_RETRY_S``."""
        if self.failure is not None:
            raise MlflowUnavailableError(str(self.failure))

    # -- internals -------------------------------------------------------------------------

    def _missing(self, run_id: str, metrics: list[Any]) -> list[Any]:
        """The points of ``metrics`` (by key and step) that the run does not have: an
        earlier coordinator of the job may have logged its epochs and been killed before it
        ended the run, and the same epochs logged again, with a new timestamp, would be
        there twice (MLflow skips only a point whose timestamp and value it has)."""
        present = self.mlflow.get_run(run_id).data.metrics
        logged = {(point.key, point.step)
                  for name in {m.key for m in metrics} if name in present
                  for point in self.mlflow.get_metric_history(run_id, name)}
        return [m for m in metrics if (m.key, m.step) not in logged]

    def _submit(self, call: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                call()
            except Exception as e:  # noqa: BLE001 - an outage: the job checks `failure`
                # (logged once, when the retries gave up); a refused request: the job goes on.
                log = logger.debug if isinstance(e, MlflowUnavailableError) else logger.warning
                log("MLflow logging failed: %s", e)
                self.errors.append(str(e))

        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._executor.submit(guarded))


class _RetryingClient:
    """An MLflow client whose every call is made again, with backoff (0.5 s doubling to 8 s),
    while it fails because MLflow cannot be reached (:func:`is_mlflow_outage`), for up to
    ``retry_s``; then :attr:`failure` is set and raised, and later calls are tried once.
    Creating a run or an experiment and logging a table are made safe to repeat here; the
    other calls the tracker makes are (metrics keep their timestamps, the rest overwrites).
    """

    def __init__(self, client: Callable[[], Any], tracking_uri: str, retry_s: float) -> None:
        self._client = client  # the tracker's, made on first use
        self.uri = _public_uri(tracking_uri)
        self.retry_s = retry_s
        self.failure: MlflowUnavailableError | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            method = getattr(self._client(), name)
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
        tags = {**tags, _CREATE_TAG: create_id}
        attempted = False

        def create() -> Any:
            nonlocal attempted
            client = self._client()
            if attempted:
                found = client.search_runs(
                    [experiment_id], filter_string=f"tags.`{_CREATE_TAG}` = '{create_id}'",
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
            client = self._client()
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
            self.log_batch(run_id, metrics=metric_list[:_BATCH_LIMIT], params=param_list[:100],
                           tags=tag_list[:100])
            metric_list, param_list, tag_list = (
                metric_list[_BATCH_LIMIT:], param_list[100:], tag_list[100:]
            )

    def log_table(self, run_id: str, columns: Mapping[str, list[Any]], name: str) -> None:
        """What ``log_table`` writes (split-oriented JSON, a table in the UI), safe to
        repeat: ``log_table`` appends to a table that is there already."""
        import json

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


def close_running(tracker: JobTracker, *, reason: str, status: str = "FAILED") -> int:
    """End every run of ``tracker``'s job left RUNNING (its coordinator could not: the
    database or MLflow was away when the job failed) as ``status``; trial and final runs get
    ``tuner.state`` FAIL and ``tuner.reason``. How many were ended."""
    client = tracker.mlflow
    experiment = client.get_experiment_by_name(tracker.experiment_name)
    if experiment is None:
        return 0
    tracker.experiment_id, tracker.resumed = experiment.experiment_id, True
    ended = 0
    for level in ("trial", "final", "optimizer", "job"):
        for run in tracker.runs(level):
            if run.info.status != "RUNNING":
                continue
            if level in ("trial", "final"):
                client.set_tag(run.info.run_id, "tuner.state", "FAIL")
                client.set_tag(run.info.run_id, "tuner.reason", reason[:500])
            client.set_terminated(run.info.run_id, status=status)
            ended += 1
    return ended


def _finite(value: float) -> float:
    # MLflow stores NaN but some backends reject inf; keep the sign of a divergence.
    if value != value:
        return float("nan")
    return max(min(float(value), 1e308), -1e308)


def _metrics(values: Mapping[str, float]) -> list[Any]:
    from mlflow.entities import Metric

    now = _now_ms()
    return [Metric(key=k, value=_finite(v), timestamp=now, step=0) for k, v in values.items()
            if v is not None]


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
