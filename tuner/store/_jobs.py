"""What the CLI, the REST API and the coordinator do with jobs. No HTTP here.

Every function takes a :class:`~sqlalchemy.orm.Session` first (see
:func:`tuner.store.session_scope`, which commits) and keyword arguments after the job.
State changes are compare-and-set ``UPDATE``\\ s, so two processes never both move a job
(a queued job is claimed once, a finished job never restarts), on SQLite and PostgreSQL.

Legal moves::

    queued  -> running | cancelled | failed
    running -> succeeded | failed | cancelled | queued   (queued: requeued, coordinator lost)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import CursorResult, Update, func, select, update
from sqlalchemy.orm import Session

from tuner.errors import JobNotFoundError, JobStateError
from tuner.store._models import TERMINAL_STATES, Job, JobEvent, JobState, utcnow

__all__ = [
    "MAX_JOB_ID",
    "ORIGINS",
    "STALE_AFTER_S",
    "TRANSITIONS",
    "claim_next_queued",
    "count_jobs",
    "create_job",
    "get_job",
    "job_events",
    "latest_job",
    "list_jobs",
    "request_cancel",
    "set_mlflow",
    "set_result",
    "set_state",
    "take_over",
    "update_progress",
]

#: Job ids are PostgreSQL ``integer``s: the largest id there can be.
MAX_JOB_ID = 2**31 - 1

#: A running job whose heartbeat (its progress, written at least every 2 s) is older than
#: this has lost its process.
STALE_AFTER_S = 30.0

#: Where a job was submitted from.
ORIGINS = ("cli", "api")

#: The states each state may move to.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def _state(value: str) -> JobState:
    try:
        return JobState(value)
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown job state {value!r}; allowed: {allowed}") from None


def _not_found(job_id: int) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id} in this store (see tuner jobs)")


def create_job(
    session: Session,
    *,
    name: str,
    task: str,
    spec: dict[str, Any],
    origin: str = "cli",
    state: str = JobState.QUEUED,
) -> Job:
    """Store a new job (its ``spec`` already validated) and return it, with its ``id``.

    A job run in the CLI's own process starts as ``running``; a submitted one as ``queued``.

    Example:
        >>> job = create_job(session, name="digits", task="digits-mlp", spec=spec.to_dict())
        >>> job.id, job.state
        (1, 'queued')
    """
    target = _state(state)
    if origin not in ORIGINS:
        raise ValueError(f"unknown job origin {origin!r}; allowed: {', '.join(ORIGINS)}")
    now = utcnow()
    job = Job(
        name=name,
        task=task,
        spec=dict(spec),
        state=target.value,
        origin=origin,
        created_at=now,
        started_at=now if target is not JobState.QUEUED else None,
        finished_at=now if target in TERMINAL_STATES else None,
        cancel_requested=False,
        attempts=1 if target is not JobState.QUEUED else 0,
        heartbeat_at=now if target is JobState.RUNNING else None,
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, at=now, state=target.value, message=f"created ({origin})"))
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job:
    """The job ``job_id``; :class:`~tuner.errors.JobNotFoundError` if there is none (an id
    outside 1..MAX_JOB_ID never reaches the database, whose integers it would overflow)."""
    if not 1 <= job_id <= MAX_JOB_ID:
        raise _not_found(job_id)
    job = session.get(Job, job_id)
    if job is None:
        raise _not_found(job_id)
    return job


def list_jobs(
    session: Session, *, limit: int = 50, offset: int = 0, state: str | None = None
) -> list[Job]:
    """Jobs newest first, ``limit`` of them after skipping ``offset``, optionally in one state."""
    stmt = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if state is not None:
        stmt = stmt.where(Job.state == _state(state).value)
    return list(session.scalars(stmt))


def count_jobs(session: Session, *, state: str | None = None) -> int:
    """How many jobs there are (in ``state``, if given)."""
    stmt = select(func.count()).select_from(Job)
    if state is not None:
        stmt = stmt.where(Job.state == _state(state).value)
    return int(session.scalar(stmt) or 0)


def latest_job(session: Session) -> Job | None:
    """The newest job, or ``None`` in an empty store."""
    return session.scalars(select(Job).order_by(Job.id.desc()).limit(1)).first()


def job_events(session: Session, job_id: int) -> list[JobEvent]:
    """The history of job ``job_id``, oldest first (its creation is the first event)."""
    events = list(
        session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        )
    )
    if not events:
        get_job(session, job_id)  # raises when the job does not exist
    return events


def _execute_update(session: Session, stmt: Update) -> int:
    """Run an ``UPDATE`` on the database only (objects are refreshed by the caller); rows hit."""
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    return cast("CursorResult[Any]", result).rowcount


def _update(session: Session, job_id: int, **values: Any) -> None:
    if _execute_update(session, update(Job).where(Job.id == job_id).values(**values)) == 0:
        raise _not_found(job_id)


def set_state(
    session: Session,
    job: Job,
    state: str,
    *,
    error: str | None = None,
    message: str | None = None,
) -> Job:
    """Move ``job`` to ``state`` and append an event to its history.

    Entering ``running`` sets ``started_at``; entering a terminal state sets ``finished_at``.
    ``error`` is stored on the job (and is the event's message unless ``message`` is given).
    An illegal move (see :data:`TRANSITIONS`) raises :class:`~tuner.errors.JobStateError`,
    also when another process moved the job first.

    Example:
        >>> set_state(session, job, "failed", error="worker lost")
    """
    target = _state(state)
    if job.id is None:
        session.flush()
    current = _state(job.state)
    if target not in TRANSITIONS[current]:
        raise JobStateError(f"job {job.id} is {current}; cannot move to {target}")
    now = utcnow()
    values: dict[str, Any] = {"state": target.value}
    if target is JobState.RUNNING:
        values["started_at"] = now
        values["heartbeat_at"] = now
        values["attempts"] = Job.attempts + 1
    if target in TERMINAL_STATES:
        values["finished_at"] = now
    if error is not None:
        values["error"] = error
    # Compare-and-set: only if nobody moved the job since we read it.
    moved = _execute_update(
        session, update(Job).where(Job.id == job.id, Job.state == current.value).values(**values)
    )
    if moved == 0:
        session.refresh(job)
        raise JobStateError(f"job {job.id} is {job.state}; cannot move to {target}")
    session.add(JobEvent(job_id=job.id, at=now, state=target.value, message=message or error))
    session.flush()
    session.refresh(job)
    return job


def update_progress(session: Session, job_id: int, progress: dict[str, Any]) -> None:
    """Replace the job's per-optimizer counts; one ``UPDATE``, also a heartbeat.

    ``progress`` looks like ``{"adam": {"trials": 30, "complete": 3, "pruned": 1,
    "failed": 0, "diverged": 0, "running": 2, "best": 0.12}}``.
    """
    _update(session, job_id, progress=progress, heartbeat_at=utcnow())


def set_result(session: Session, job_id: int, result: dict[str, Any]) -> None:
    """Store the job's result: the export document and the leaderboard."""
    _update(session, job_id, result=result)


def set_mlflow(session: Session, job_id: int, *, experiment_id: str, run_id: str) -> None:
    """Store the MLflow experiment and parent run of the job."""
    _update(session, job_id, mlflow_experiment_id=experiment_id, mlflow_run_id=run_id)


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a job: a queued one at once; a running one is flagged for its coordinator.

    The coordinator sees ``cancel_requested``, stops its trials and moves the job to
    ``cancelled``. Asking twice is harmless. A finished job raises
    :class:`~tuner.errors.JobStateError`.
    """
    now = utcnow()
    cancelled = _execute_update(
        session,
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
        .values(state=JobState.CANCELLED.value, cancel_requested=True, finished_at=now),
    )
    if cancelled:
        message = "cancelled before it started"
        session.add(
            JobEvent(job_id=job_id, at=now, state=JobState.CANCELLED.value, message=message)
        )
        session.flush()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise _not_found(job_id)
    if cancelled:
        return job
    if job.state in TERMINAL_STATES:
        raise JobStateError(
            f"job {job_id} is {job.state}; only a queued or running job can be cancelled"
        )
    if not job.cancel_requested:
        _update(session, job_id, cancel_requested=True)
        session.add(
            JobEvent(job_id=job_id, at=now, state=job.state, message="cancel requested")
        )
        session.flush()
        session.refresh(job)
    return job


def claim_next_queued(session: Session, *, job_id: int | None = None) -> Job | None:
    """Move the oldest queued job (or job ``job_id``, if it is still queued) to ``running``
    and return it; ``None`` if there is none.

    Safe with many claimers: on PostgreSQL the candidate is read with ``FOR UPDATE SKIP
    LOCKED``; everywhere the move is a compare-and-set, so a job is claimed once. Commit
    soon after (the row stays locked until then on PostgreSQL).
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    only = job_id
    while True:
        candidate = select(Job.id).where(Job.state == JobState.QUEUED.value)
        if only is not None:
            candidate = candidate.where(Job.id == only)
        candidate = candidate.order_by(Job.id).limit(1)
        if postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        job_id = session.scalar(candidate)
        if job_id is None:
            return None
        now = utcnow()
        claimed = _execute_update(
            session,
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(
                state=JobState.RUNNING.value,
                started_at=now,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
            ),
        )
        if claimed:
            session.add(
                JobEvent(job_id=job_id, at=now, state=JobState.RUNNING.value, message="claimed")
            )
            session.flush()
            return session.get(Job, job_id, populate_existing=True)
        if only is not None:
            return None  # the job was claimed or cancelled meanwhile
        # Another claimer took it between our read and our write: try the next one.


def take_over(session: Session, job: Job, *, message: str) -> Job:
    """A new process takes over a ``running`` job whose process died: the job stays
    ``running`` (no other process can claim it meanwhile), with a fresh heartbeat and an
    event saying so.

    Raises:
        JobStateError: the job is not running.
    """
    if job.state != JobState.RUNNING:
        raise JobStateError(f"job {job.id} is {job.state}; only a running job can be taken over")
    now = utcnow()
    _update(session, job.id, heartbeat_at=now)
    session.add(JobEvent(job_id=job.id, at=now, state=JobState.RUNNING.value, message=message))
    return job
