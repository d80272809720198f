"""The shapes the REST API answers with. The request body of ``POST /v1/jobs`` is the job
document itself, validated by :func:`tuner.spec.parse_job` (the model is
:class:`tuner.spec.JobSpec`), so the CLI and the API share one validation and its messages.
A job's views are built by :mod:`tuner.views` (FastAPI-free, so the CLI's local store answers
with the same builders): :class:`JobSummary` and :class:`JobDetail` describe what its
``job_summary`` and ``job_detail`` build; :class:`ReportFacts` is its own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tuner.views import ReportFacts

__all__ = [
    "ErrorOut",
    "Health",
    "JobDetail",
    "JobEventOut",
    "JobPage",
    "JobSummary",
    "ReportFacts",
    "SearchSpaceOut",
    "TaskOut",
    "TrialOut",
    "TrialPage",
    "ValidationErrorOut",
    "ValidationProblem",
]

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobSummary(BaseModel):
    """A job as lists show it (no spec, no result)."""

    id: int
    name: str
    task: str
    state: State
    optimizers: list[str] = Field(description="The optimizers compared, in the job's order.")
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None = Field(description="Why a failed job failed.")
    progress: dict[str, Any] | None = Field(
        description="Per-optimizer trial counts: {phase, optimizers: {name: {budget, complete, "
        "pruned, diverged, failed, lost, running, finished, best, best_trial, final_total, "
        "final_done}}}; refreshed at most once a second while the job runs."
    )
    mlflow_experiment_id: str | None
    mlflow_run_id: str | None
    origin: str = Field(description="Where the job was submitted from: cli or api.")
    cancel_requested: bool


class JobEventOut(BaseModel):
    """One entry of a job's history."""

    at: str | None
    state: str
    message: str | None


class JobDetail(JobSummary):
    """A job in full: its validated spec, history and (once succeeded) leaderboard."""

    spec: dict[str, Any] = Field(description="The job document as validated and stored.")
    leaderboard: list[dict[str, Any]] | None = Field(
        default=None, description="Optimizers ranked by their final re-runs (succeeded jobs)."
    )
    seconds: float | None = Field(default=None, description="How long the job ran.")
    events: list[JobEventOut] = Field(default_factory=list)


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobSummary]
    total: int = Field(description="How many jobs match (all pages).")
    limit: int
    offset: int


class TrialOut(BaseModel):
    """One Optuna trial of one optimizer's study ``job-<id>-<optimizer>``."""

    optimizer: str
    number: int
    state: str = Field(description="RUNNING, COMPLETE, PRUNED, FAIL or WAITING (Optuna).")
    value: float | None
    params: dict[str, Any] = Field(description="Optuna's parameters (as sampled).")
    user_attrs: dict[str, Any]
    datetime_start: str | None
    datetime_complete: str | None


class TrialPage(BaseModel):
    """One page of a job's trials: by optimizer (in the job's order), then trial number."""

    items: list[TrialOut]
    total: int
    limit: int
    offset: int


class SearchSpaceOut(BaseModel):
    """A shipped search space: the torch.optim class and each parameter's distribution."""

    name: str
    torch_class: str = Field(description="e.g. torch.optim.Adam")
    description: str
    fixed: dict[str, Any]
    params: dict[str, str] = Field(
        description="Parameter -> distribution: LU[a, b] log-uniform, U[a, b], int U[a, b], "
        "{choices}, 1 - LU[a, b] (tuned as one minus the value)."
    )


class TaskOut(BaseModel):
    """A task the API accepts: built-in, or installed through the ``tuner.tasks`` entry points."""

    name: str
    kind: str
    description: str
    metrics: list[str] = Field(description="What `metric:` may name for this task.")


class Health(BaseModel):
    """Liveness and readiness: the jobs database answers and the coordinator works."""

    status: Literal["ok", "unavailable"]
    version: str
    problems: list[str] = Field(
        default_factory=list,
        description="Why the service cannot work now (empty when status is ok): the jobs "
        "database away, Ray unreachable or starting, the coordinator loop stopped or stuck.",
    )
    coordinator: dict[str, Any] | None = Field(
        default=None, description="The coordinator loop of `tuner serve`, when it runs here."
    )


class ErrorOut(BaseModel):
    """A 401, 404, 409, 413 or 503 answer: one line saying what is wrong."""

    detail: str


class ValidationProblem(BaseModel):
    """One bad field. ``msg`` is the CLI's line for it, field name first."""

    loc: list[str | int] = Field(description='Where: ["body", "optimizers", 0].')
    msg: str = Field(description="e.g. optimizers[0]: unknown optimizer 'nosuchopt'; ...")
    type: str = "value_error"


class ValidationErrorOut(BaseModel):
    """A 422 answer: every bad field of the request at once."""

    detail: list[ValidationProblem]
