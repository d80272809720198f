"""The MLflow side of one job (:class:`JobTracker`), and the end of what a job that ended
without its coordinator left running there (:func:`close_running`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.config import get_settings
from tuner.errors import MlflowUnavailableError
from tuner.tracking._client import RetryingClient
from tuner.tracking._links import LEADERBOARD_VIEW, VIEW_TAG, leaderboard_view_state
from tuner.tracking._metrics import epoch_metrics, flatten, missing_points, summary_metrics
from tuner.tracking._queue import LoggingQueue

__all__ = ["JobTracker", "close_running"]

logger = logging.getLogger(__name__)

#: The columns of the leaderboard table artifact -> the leaderboard row's keys.
TABLE_COLUMNS = {
    "rank": "rank", "optimizer": "optimizer", "final_mean": "mean", "final_std": "std",
    "final_runs": "seeds", "ci95": "ci95", "p_vs_leader": "p_vs_leader",
    "tied_with_leader": "tied_with_leader", "best": "best", "best_trial": "trial",
    "lr": "lr", "batch_size": "batch_size",
}


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
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.job_id = job_id
        self.experiment_name = f"job-{job_id}-{job_name}"
        self.experiment_id = ""
        self.job_run_id = ""
        self.optimizer_runs: dict[str, str] = {}
        self.resumed = False
        self._runs: dict[str, str] = {}  # trial key -> run id, written by the logging thread
        self._adopted: set[str] = set()  # trial keys of runs an earlier coordinator began
        self._queue = LoggingQueue()
        #: What failed to be logged (the job goes on; its end reports them).
        self.errors = self._queue.errors
        #: The client through which every call is made: retried while MLflow is away.
        self.mlflow = RetryingClient(
            tracking_uri, get_settings().mlflow_retry_s if retry_s is None else retry_s)

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
            self.mlflow.log_batches(job_run.info.run_id, params=flatten(spec))
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

        self._queue.submit(create)

    def run_finished(self, key: str, *, state: str, epochs: Sequence[Mapping[str, Any]],
                     tags: Mapping[str, str] | None = None,
                     summary: Mapping[str, float] | None = None) -> None:
        """Log a run's per-epoch metrics in one batch and end it with its final state.

        ``state`` is ``COMPLETE``, ``PRUNED``, ``FAIL`` or ``DIVERGED``; MLflow's run status
        is FINISHED for the first two and FAILED otherwise.
        """
        metrics = epoch_metrics(epochs, summary)
        all_tags = {"tuner.state": state, **(tags or {})}
        status = "FINISHED" if state in ("COMPLETE", "PRUNED") else "FAILED"

        def finish() -> None:
            run_id = self._runs.get(key)
            if run_id is None:
                return  # its creation failed and was reported already
            new = (missing_points(self.mlflow, run_id, metrics) if key in self._adopted
                   else metrics)
            self.mlflow.log_batches(run_id, metrics=new, tags=all_tags)
            self.mlflow.set_terminated(run_id, status=status)

        self._queue.submit(finish)

    def tag(self, key: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run (in order, on the logging thread)."""

        def set_tags() -> None:
            run_id = self._runs.get(key)
            if run_id is not None:
                self.mlflow.log_batches(run_id, tags=tags)

        self._queue.submit(set_tags)

    def run_id(self, key: str) -> str | None:
        """The MLflow run of a trial key, once the logging thread has created it."""
        self.flush()
        return self._runs.get(key)

    # -- the end ---------------------------------------------------------------------------

    def log_job_params(self, params: Mapping[str, Any]) -> None:
        """Add parameters to the job run (e.g. what the learning-rate range test found)."""
        run_id = self.job_run_id
        self._queue.submit(lambda: self.mlflow.log_batches(run_id, params=params))

    def log_optimizer(self, optimizer: str, *, metrics: Mapping[str, float],
                      params: Mapping[str, Any], headline: str | None = None,
                      status: str = "FINISHED") -> None:
        """End an optimizer's run. ``headline`` goes into its name: the Runs table shows no
        metric column until the user picks one, but it always shows the name."""
        run_id = self.optimizer_runs[optimizer]

        def log() -> None:
            self.mlflow.log_batches(run_id, params=params, metrics=summary_metrics(metrics))
            if headline:
                self.mlflow.update_run(run_id, name=f"{optimizer} {headline}")
            self.mlflow.set_terminated(run_id, status=status)

        self._queue.submit(log)

    def finish_job(self, *, status: str, metrics: Mapping[str, float],
                   artifacts: Mapping[str, str] | None = None,
                   files: Iterable[str] = (), headline: str | None = None) -> None:
        """End the job run: summary metrics, text artifacts (name -> content) and files;
        ``headline`` is appended to its name (the winner, visible before any click)."""
        self.flush()
        self.mlflow.log_batches(self.job_run_id, metrics=summary_metrics(metrics))
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
        columns: dict[str, list[Any]] = {key: [] for key in TABLE_COLUMNS}
        for row in rows:
            for key, source in TABLE_COLUMNS.items():
                columns[key].append(row.get(source))
        try:
            self.mlflow.log_batches(self.job_run_id, metrics=summary_metrics({"rank": 0.0}))
            self.mlflow.log_table(self.job_run_id, columns, "leaderboard_table.json")
            # Last: the link to the view is printed only when all of it is there.
            self.mlflow.set_experiment_tag(self.experiment_id,
                                           f"{VIEW_TAG}{LEADERBOARD_VIEW}",
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
        self._queue.flush()

    def close(self) -> None:
        self._queue.close()

    @property
    def failure(self) -> MlflowUnavailableError | None:
        """Set once a call could not be made within ``retry_s``: the runs are incomplete."""
        return self.mlflow.failure

    def check(self) -> None:
        """Raise :attr:`failure` if a call of this job could not be made: MLflow was away
        longer than ``TUNER_MLFLOW_RETRY_S``."""
        if self.failure is not None:
            raise MlflowUnavailableError(str(self.failure))


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
