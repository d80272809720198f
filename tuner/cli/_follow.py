"""Following a job (``tuner status --watch``, ``tuner submit --wait``): progress bars until it
ends, then its leaderboard; from whichever :class:`~tuner.cli._source.JobsSource` holds it."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.text import Text

from tuner.cli._display import JobBars, console, leaderboard_table
from tuner.cli._source import JobsSource
from tuner.cli._text import as_text
from tuner.errors import TunerError
from tuner.results import JobProgress, LeaderboardRow

__all__ = ["TERMINAL", "follow_job", "job_leaderboard", "job_progress", "job_title"]

TERMINAL = ("succeeded", "failed", "cancelled")


def job_progress(job: dict[str, Any]) -> JobProgress:
    """The :class:`~tuner.results.JobProgress` of a job as a :class:`JobsSource` shows it."""
    spec = job.get("spec") or {}
    return JobProgress.from_dict(job.get("progress"), job_id=job["id"],
                                 metric=spec.get("metric", ""), mode=spec.get("mode", "min"))


def job_leaderboard(job: dict[str, Any]) -> tuple[LeaderboardRow, ...]:
    """The leaderboard of a job as a :class:`JobsSource` shows it, typed (empty until the job
    succeeded)."""
    return tuple(LeaderboardRow.from_dict(row) for row in job.get("leaderboard") or ())


def job_title(job_id: int, name: object, task: object, tail: str = "") -> Text:
    """``job ID: NAME on TASK`` and our ``tail``, the user's text as text."""
    return Text.assemble(f"job {job_id}: ", as_text(name), " on ", as_text(task), tail)


def follow_job(source: JobsSource, job_id: int, *, interval: float = 1.0) -> dict[str, Any]:
    """Show a job's progress bars until it ends, then its leaderboard.

    Raises:
        TunerError: the job failed or was cancelled (the CLI exits 1).
    """
    job = source.job(job_id)
    spec = job.get("spec") or {}
    optimizers = list(spec.get("optimizers", []))
    try:
        with JobBars(optimizers, int(spec.get("trials", 1)), spec.get("metric", "")) as bars:
            while True:
                bars.update(job_progress(job))
                if job["state"] in TERMINAL:
                    break
                time.sleep(interval)
                job = source.job(job_id)
    except KeyboardInterrupt:
        console.print(f"stopped following job {job_id}; it goes on (tuner cancel {job_id} "
                      "stops it)")
        raise typer.Exit(code=130) from None
    _print_outcome(job)
    return job


def _print_outcome(job: dict[str, Any]) -> None:
    spec = job.get("spec") or {}
    state = job["state"]
    if state == "failed":
        raise TunerError(f"job {job['id']} failed: {job.get('error') or 'no error recorded'}")
    if state == "cancelled":
        raise TunerError(f"job {job['id']} was cancelled")
    board = job_leaderboard(job)
    if board:
        console.print(leaderboard_table(
            board, metric=spec.get("metric", ""), mode=spec.get("mode", "min"),
            title=job_title(job["id"], job["name"], job["task"]),
        ))
        best = board[0].optimizer
        seconds = job.get("seconds")
        took = f"  ({seconds:.0f} s)" if seconds else ""
        console.print(Text.assemble("best optimizer: ", as_text(best, "bold green"), took))
    console.print(f"job {job['id']} {state}; export: tuner export {job['id']}")
