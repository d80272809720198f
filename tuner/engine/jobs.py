"""Run a stored job: the one path shared by ``tuner run``, ``tuner demo`` and the service.

It moves the job through its states in the jobs table, runs the coordinator, keeps the
job's per-optimizer progress current (at most once a second), turns the search result into
the job's outcome (the leaderboard, :mod:`tuner.analysis.statistics`; the export,
:mod:`tuner.analysis.export`) and stores it: the leaderboard, export and report in the table
and on disk, and their copies and each optimizer's summary in the job's MLflow runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tuner import store
from tuner.analysis.export import build_export, render_export
from tuner.analysis.statistics import rank
from tuner.config import Settings
from tuner.engine.cluster import WarmWorkers, ensure_ray
from tuner.engine.coordinator import Coordinator
from tuner.engine.ride_out import riding_out
from tuner.engine.studies import open_storage
from tuner.errors import JobCancelled, JobInterrupted, TunerError
from tuner.results import (
    JobOutcome,
    JobProgress,
    JobResult,
    LeaderboardRow,
    SearchResult,
    jsonable,
)
from tuner.spec import JobSpec
from tuner.tracking import JobTracker

__all__ = [
    "cancel_check", "create_local_job", "export_path", "outcome_of", "report_dir", "run_job",
]

logger = logging.getLogger(__name__)


def create_local_job(settings: Settings, spec: JobSpec, *, origin: str = "cli",
                     start_ray: bool = False) -> int:
    """Record a job that this process runs (``running`` at once: no server may claim it)
    and return its id, for :func:`run_job`.

    With ``start_ray`` (``tuner run``), Ray starts in this thread meanwhile: the migrations
    and Optuna's tables are done in a helper thread, off the way to the first trial.
    """
    if start_ray:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-create") as helper:
            created = helper.submit(create_local_job, settings, spec, origin=origin)
            try:
                ensure_ray(settings.ray_address)
            except Exception as e:  # noqa: BLE001 - run_job tries again and fails the job
                logger.debug("Ray did not start yet: %s", e)
            return created.result()

    settings.ensure_home()
    store.upgrade(settings.database_url)
    # Optuna's tables too, now: whoever opens the studies first must not race their creation.
    open_storage(settings.database_url)
    with store.session_scope(settings.database_url) as session:
        # Running from the start: this process runs it; no server may claim it.
        job = store.create_job(
            session, name=spec.name, task=spec.task, spec=spec.model_dump(mode="json"),
            origin=origin, state=store.JobState.RUNNING,
        )
        session.flush()
        return job.id


def cancel_check(url: str, job_id: int, *, every_s: float = 0.5) -> Callable[[], bool]:
    """``should_cancel`` of a job: its ``cancel_requested`` flag in the jobs table (set by
    ``tuner cancel`` or the API), read at most every ``every_s`` seconds."""
    last = {"at": 0.0, "value": False}

    def should_cancel() -> bool:
        now = time.monotonic()
        if now - last["at"] >= every_s:
            last["at"] = now
            try:
                with store.session_scope(url) as session:
                    stmt = select(store.Job.cancel_requested).where(store.Job.id == job_id)
                    last["value"] = bool(session.scalar(stmt))
            except TunerError as e:
                logger.warning("job %s: cannot read its cancel flag: %s", job_id, e)
        return bool(last["value"])

    return should_cancel


def export_path(settings: Settings, job_id: int) -> Path:
    return settings.home / "exports" / f"job-{job_id}.yaml"


def run_job(
    settings: Settings,
    job_id: int,
    spec: JobSpec,
    *,
    on_progress: Callable[[JobProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    warm: WarmWorkers | None = None,
) -> JobOutcome:
    """Run job ``job_id`` to its end and record it. Raises what the coordinator raised.

    Args:
        should_cancel: ``True`` cancels the job (state ``cancelled``).
        should_stop: ``True`` interrupts it: back to ``queued``, to resume later.
        warm: A server's idle workers, reused when they fit the job.
    """
    url = settings.database_url
    _mark_running(url, job_id)
    run = _JobRun(settings, job_id, spec, on_progress)
    search, tracker = run.search(should_cancel=should_cancel, should_stop=should_stop, warm=warm)
    try:
        outcome = outcome_of(search)
        _log_optimizers(tracker, outcome)
        result = _record(settings, job_id, spec, outcome)
    except BaseException as e:
        run.end(store.JobState.FAILED, "FAILED",
                error=f"recording the results failed: {type(e).__name__}: {e}")
        raise
    # The jobs table holds the result; MLflow gets its copy (an MLflow outage now, longer
    # than TUNER_MLFLOW_RETRY_S, never turns a finished job into a failed one: the job's
    # event says what is missing) before the table says "succeeded", so whoever sees a
    # succeeded job finds every one of its MLflow runs ended.
    _best_effort(lambda: _log_to_mlflow(tracker, spec, result), job_id)
    tracker.close()
    message = None
    if tracker.failure is not None:
        message = f"succeeded, but MLflow's copy of its results is incomplete: {tracker.failure}"
    riding_out(settings, what=f"job {job_id}")(partial(_succeeded, url, job_id, message))
    return outcome


def _mark_running(url: str, job_id: int) -> None:
    """A queued job moves to running; one created running by this process, claimed by the
    service or taken over by `tuner resume` is running already."""
    with store.session_scope(url) as session:
        job = store.get_job(session, job_id)
        if job.state != store.JobState.RUNNING:
            store.set_state(session, job, store.JobState.RUNNING)


class _JobRun:
    """One run of a job's search: its MLflow tracker and coordinator, its progress (saved at
    most once a second) and, when it ends early, its end in MLflow and the jobs table."""

    def __init__(self, settings: Settings, job_id: int, spec: JobSpec,
                 on_progress: Callable[[JobProgress], None] | None) -> None:
        self.settings, self.job_id, self.spec = settings, job_id, spec
        self.on_progress = on_progress
        self.tracker: JobTracker | None = None
        self.coordinator: Coordinator | None = None
        self._last_saved = 0.0
        self._linked = False

    def search(
        self,
        *,
        should_cancel: Callable[[], bool] | None,
        should_stop: Callable[[], bool] | None,
        warm: WarmWorkers | None,
    ) -> tuple[SearchResult, JobTracker]:
        """The coordinator's search result, once every trial and final run is in MLflow;
        a search that ends otherwise ends the job (cancelled, queued again or failed)."""
        settings, job_id = self.settings, self.job_id
        try:
            tracker = self.tracker = JobTracker(
                settings.tracking_uri, settings.artifact_root, job_id=job_id,
                job_name=self.spec.name, retry_s=settings.mlflow_retry_s)
            self.coordinator = Coordinator(settings, job_id, self.spec, tracker,
                                           on_progress=self.progress,
                                           should_cancel=should_cancel,
                                           should_stop=should_stop, warm=warm)
            search = self.coordinator.run()
            tracker.flush()
            tracker.check()
        except JobCancelled as e:
            self.end(store.JobState.CANCELLED, "KILLED", message=str(e))
            raise
        except KeyboardInterrupt:
            self.end(store.JobState.CANCELLED, "KILLED", message="interrupted (Ctrl-C)")
            raise
        except JobInterrupted as e:
            # Back to the queue; its MLflow run is taken up again when the job resumes.
            self.end(store.JobState.QUEUED, "KILLED", message=str(e))
            raise
        except BaseException as e:
            self.end(store.JobState.FAILED, "FAILED", error=f"{type(e).__name__}: {e}")
            raise
        return search, tracker

    def progress(self, snapshot: JobProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(snapshot)
        now = time.monotonic()
        if now - self._last_saved < 1.0 and snapshot.phase != "done":
            return
        self._last_saved = now
        tracker = self.tracker
        with store.session_scope(self.settings.database_url) as session:
            store.update_progress(session, self.job_id, snapshot.to_dict())
            if not self._linked and tracker is not None and tracker.job_run_id:
                # A running job already links to its MLflow runs (tuner ui, the API).
                store.set_mlflow(session, self.job_id, experiment_id=tracker.experiment_id,
                                 run_id=tracker.job_run_id)
                self._linked = True

    def end(self, state: Any, mlflow_status: str, **why: Any) -> None:
        """MLflow's job run ends first, then the jobs table says the job ended."""
        tracker = self.tracker
        if tracker is not None:
            if tracker.job_run_id:
                _best_effort(lambda: tracker.finish_job(status=mlflow_status, metrics={}),
                             self.job_id)
            tracker.close()
        coordinator = self.coordinator
        progress_now = coordinator.progress.to_dict() if coordinator is not None else None
        _end(self.settings.database_url, self.job_id, state, progress=progress_now, **why)


def outcome_of(search: SearchResult) -> JobOutcome:
    """A finished search ranked (the leaderboard) and exported."""
    board = rank(search.spec, search.results, search.progress)
    export = build_export(search.job_id, search.spec, search.results, board)
    found = {f.name: getattr(search, f.name) for f in dataclasses.fields(search)}
    return JobOutcome(**found, export=export, leaderboard=[row.to_dict() for row in board])


def _log_optimizers(tracker: Any, outcome: JobOutcome) -> None:
    """Each optimizer run's summary: best and final metrics, rank, best setting, headline."""
    metric = outcome.spec.metric
    for row in map(LeaderboardRow.from_dict, outcome.leaderboard):
        result = outcome.results[row.optimizer]
        metrics = {f"best_{metric}": row.best, f"final_mean_{metric}": row.mean,
                   f"final_std_{metric}": row.std, "rank": row.rank}
        tracker.log_optimizer(
            row.optimizer, metrics={k: v for k, v in metrics.items() if v is not None},
            params={f"best.{k}": v for k, v in (result.hyperparameters or {}).items()},
            headline=_headline(row),
        )


def _headline(row: LeaderboardRow) -> str:
    """``#1 0.9739±0.0054`` (final mean ± std) or ``#3 best 0.97`` without final runs."""
    if row.mean is not None:
        return f"#{row.rank} {row.mean:.4g}±{row.std:.2g}"
    if row.best is not None:
        return f"#{row.rank} best {row.best:.4g}"
    return f"#{row.rank} no result"


def _best_effort(call: Callable[[], None], job_id: int) -> None:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the job's results are stored already
        logger.warning("job %s: MLflow logging at the end failed: %s", job_id, e)


def _record(settings: Settings, job_id: int, spec: JobSpec,
            outcome: JobOutcome) -> dict[str, Any]:
    """Store a finished job's results: the export file, the report, the jobs table."""
    from tuner.analysis.report import library_versions

    # The export file a user can hand to torch.optim, next to the job's MLflow run.
    path = export_path(settings, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_text = render_export(outcome.export, "yaml")
    path.write_text(export_text)
    board = jsonable(outcome.leaderboard)
    result: dict[str, Any] = {
        # Protocol point 8, what makes it re-runnable: versions and the problem instance.
        "versions": library_versions(),
        "problem": outcome.problem,
        "lr_range": jsonable(outcome.lr_range),
        "export": jsonable(outcome.export),
        "leaderboard": board,
        "seconds": outcome.seconds,
        "optimizers": jsonable(
            {name: r.to_dict(spec.metric) for name, r in outcome.results.items()}
        ),
        "export_path": str(path.resolve()),
    }
    report_files = _write_report(settings, job_id, spec, JobResult.from_dict(result))
    if report_files:
        result["report_path"] = str(report_files[-1].resolve())
    result["report_files"] = [str(p.resolve()) for p in report_files]
    with store.session_scope(settings.database_url) as session:
        store.set_result(session, job_id, result)
        store.set_mlflow(session, job_id, experiment_id=outcome.experiment_id,
                         run_id=outcome.job_run_id)
        store.update_progress(session, job_id, outcome.progress.to_dict())
    return result


def _succeeded(url: str, job_id: int, message: str | None = None) -> None:
    with store.session_scope(url) as session:
        store.set_state(session, store.get_job(session, job_id), store.JobState.SUCCEEDED,
                        message=message)


def _log_to_mlflow(tracker: Any, spec: JobSpec, result: dict[str, Any]) -> None:
    """The job run's summary metrics, headline, export, leaderboard and report."""
    stored = JobResult.from_dict(result)
    summary = {f"{row.optimizer}.{spec.metric}": row.score for row in stored.leaderboard
               if row.score is not None}
    leader = stored.leaderboard[0] if stored.leaderboard else None
    headline = None
    if leader is not None and leader.score is not None:
        headline = f"{leader.optimizer} {leader.score:.4g}"
    tracker.log_files([Path(p) for p in stored.report_files], artifact_path="report")
    tracker.publish_leaderboard(result["leaderboard"], metric=spec.metric)
    tracker.finish_job(
        status="FINISHED",
        headline=headline,
        metrics=summary,
        artifacts={"export.yaml": render_export(stored.export, "yaml"),
                   "leaderboard.json": json.dumps(result["leaderboard"], indent=2)},
    )


def report_dir(settings: Settings, job_id: int) -> Path:
    return settings.home / "reports" / f"job-{job_id}"


def _write_report(settings: Settings, job_id: int, spec: JobSpec,
                  result: JobResult) -> list[Path]:
    """The job's report (plots and report.html); a plotting error never fails the job."""
    from tuner.analysis.report import write_report

    try:
        return write_report(job_id, spec.model_dump(mode="json"), result,
                            report_dir(settings, job_id), storage_url=settings.database_url)
    except Exception as e:  # noqa: BLE001 - the results are stored either way
        logger.warning("job %s: could not write its report: %s", job_id, e)
        return []


def _end(url: str, job_id: int, state: Any, *, error: str | None = None,
         message: str | None = None, progress: dict[str, Any] | None = None) -> None:
    with store.session_scope(url) as session:
        if progress is not None:
            store.update_progress(session, job_id, progress)
        store.set_state(session, store.get_job(session, job_id), state, error=error,
                        message=message)
