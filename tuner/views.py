"""A stored job as the faces show it: the REST API's shapes, built in one place.

``GET /v1/jobs`` answers a :func:`job_page` of :func:`job_summary`, ``GET /v1/jobs/{id}`` a
:func:`job_detail` (the API's ``JobPage`` and ``JobDetail``), and
``GET /v1/jobs/{id}/report/facts`` a :class:`ReportFacts`. The CLI's local jobs source
(:class:`tuner.cli._local.LocalJobs`) answers with the same functions over the same store
objects, so the store and a server cannot drift apart; this module loads neither FastAPI
nor SQLAlchemy (the store's objects come in as arguments), and the statistics only for the
facts.

A stored result is read typed (:class:`~tuner.results.JobResult`): the leaderboard a job
answers with is its rows (:class:`~tuner.results.LeaderboardRow`) in their stored form.

Example:
    >>> with store.session_scope(url) as session:
    ...     job = store.get_job(session, 3)
    ...     view = job_detail(job, store.job_events(session, 3))
    >>> view["leaderboard"][0]["optimizer"]
    'adam'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from tuner.errors import JobStateError
from tuner.results import JobResult

if TYPE_CHECKING:
    from tuner.store import Job, JobEvent

__all__ = ["OptimizerFacts", "ReportFacts", "ShareFacts", "SpeedFacts", "SpreadFacts",
           "TunabilityFacts", "job_detail", "job_page", "job_summary", "report_facts",
           "succeeded_result"]


# -- a job ----------------------------------------------------------------------------------


def job_summary(job: Job) -> dict[str, Any]:
    """A stored job as lists show it (the API's ``JobSummary``: no spec, no result)."""
    return job.to_dict() | {"optimizers": list((job.spec or {}).get("optimizers", []))}


def job_detail(job: Job, events: Iterable[JobEvent]) -> dict[str, Any]:
    """A stored job in full (the API's ``JobDetail``): spec, history, and once it succeeded
    its leaderboard (the stored rows) and how long it ran."""
    result = JobResult.from_dict(job.result)
    return job_summary(job) | {
        "spec": job.spec or {},
        # A job without a result (not succeeded) has no leaderboard, not an empty one.
        "leaderboard": [row.to_dict() for row in result.leaderboard] if job.result else None,
        "seconds": result.seconds,
        "events": [event.to_dict() for event in events],
    }


def job_page(jobs: Iterable[Job], *, total: int, limit: int, offset: int) -> dict[str, Any]:
    """One page of jobs, newest first (the API's ``JobPage``)."""
    return {"items": [job_summary(job) for job in jobs], "total": total, "limit": limit,
            "offset": offset}


def succeeded_result(job: Job, needs: str) -> JobResult:
    """A succeeded job's stored result, typed.

    Raises:
        JobStateError: the job has not succeeded (the API's 409): ``job 3 is queued; {needs}``.
    """
    if job.state != "succeeded" or not job.result:  # store.JobState.SUCCEEDED, a str
        raise JobStateError(f"job {job.id} is {job.state}; {needs}")
    return JobResult.from_dict(job.result)


# -- the report's facts ---------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """NaN and inf are no JSON numbers: they are answered as ``null``."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


#: A number of the facts, or ``None`` where there is none (NaN and inf included).
Number = Annotated[float | None, BeforeValidator(_finite)]


class TunabilityFacts(BaseModel):
    """How much tuning an optimizer needed (Sivaprasad et al. 2020), failed trials scored
    with the job's worst value; ``tuner.analysis.tunability.tunability`` without its curve
    (drawn in the report's ``tunability.png``)."""

    n: int = Field(description="Trials scored.")
    best: Number = Field(default=None, description="The best score of all trials.")
    expected_1: Number = Field(default=None,
                               description="The expected score of one random trial.")
    k_within_1pct: int | None = Field(
        default=None, description="Trials until the expected best is within 1% of the best.")
    cpe: Number = Field(default=None, description="Expected best, weighted early.")
    cpu: Number = Field(default=None, description="Expected best, weighted uniformly.")
    cpl: Number = Field(default=None, description="Expected best, weighted late.")


class ShareFacts(BaseModel):
    """Trial outcomes, counted and as shares of the trials (lost trials left out)."""

    complete: int
    pruned: int
    diverged: int
    failed: int
    n: int
    share_complete: Number = None
    share_pruned: Number = None
    share_diverged: Number = None
    share_failed: Number = None


class SpreadFacts(BaseModel):
    """The spread of some runs' values: mean, std (ddof 1), 95% CI half-width, min, max,
    median, and how many had a value."""

    mean: Number = None
    std: Number = None
    ci95: Number = None
    min: Number = None
    max: Number = None
    median: Number = None
    n: int = 0


class SpeedFacts(BaseModel):
    """Epochs and training seconds until the final runs reach the job's target (medians)."""

    epoch: Number = Field(default=None, description="epochs + 1 for a run that never did.")
    seconds: Number = Field(default=None, description="Over the runs that got there.")
    reached: int = 0
    runs: int = 0


class OptimizerFacts(BaseModel):
    """One optimizer's tunability and sensitivity."""

    tunability: TunabilityFacts
    shares: ShareFacts
    seeds: SpreadFacts = Field(description="The final re-runs: sensitivity to the seed.")
    hyper: SpreadFacts = Field(
        description="The complete trials: sensitivity to the hyperparameters.")
    seconds_per_epoch: Number = Field(default=None,
                                      description="Median over the final re-runs.")
    speed: SpeedFacts | None = Field(default=None,
                                     description="Time to the target (jobs with a target).")


class ReportFacts(BaseModel):
    """What a job's report states besides its leaderboard
    (``tuner.analysis.statistics.report_facts``): per optimizer, in the job's order, and
    its warnings."""

    optimizers: dict[str, OptimizerFacts]
    warnings: list[str] = Field(
        description="Edge and inclusion warnings, optimizers without a complete trial, "
        "diverged trials and final re-runs.")
    worst: Number = Field(default=None,
                          description="The job's worst trial value: a failed trial's score.")


def report_facts(spec: Mapping[str, Any], result: JobResult) -> ReportFacts:
    """A succeeded job's :class:`ReportFacts` from its stored spec and result."""
    from tuner.analysis.statistics import report_facts as facts_of

    return ReportFacts.model_validate(facts_of(spec, result))
