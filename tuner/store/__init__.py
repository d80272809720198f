"""The jobs store: ``tuner_*`` tables next to Optuna's studies, in one database.

Example:
    >>> from tuner import store
    >>> store.upgrade(url)
    >>> with store.session_scope(url) as session:
    ...     job = store.create_job(session, name="digits", task="digits-mlp", spec=spec)
    ...     store.set_state(session, job, store.JobState.RUNNING)
"""

from __future__ import annotations

from tuner.store._code import code_bytes, get_code, put_code
from tuner.store._engine import (
    DEFAULT_RETRY_S,
    get_engine,
    ping,
    retrying,
    session_scope,
    upgrade,
)
from tuner.store._jobs import (
    MAX_JOB_ID,
    STALE_AFTER_S,
    TRANSITIONS,
    claim_next_queued,
    count_jobs,
    create_job,
    get_job,
    job_events,
    latest_job,
    list_jobs,
    request_cancel,
    set_mlflow,
    set_result,
    set_state,
    take_over,
    update_progress,
)
from tuner.store._models import TERMINAL_STATES, Base, CodeArchive, Job, JobEvent, JobState

__all__ = [
    "DEFAULT_RETRY_S",
    "MAX_JOB_ID",
    "STALE_AFTER_S",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Base",
    "CodeArchive",
    "Job",
    "JobEvent",
    "JobState",
    "claim_next_queued",
    "code_bytes",
    "count_jobs",
    "create_job",
    "get_job",
    "get_code",
    "get_engine",
    "job_events",
    "latest_job",
    "list_jobs",
    "ping",
    "put_code",
    "request_cancel",
    "retrying",
    "session_scope",
    "set_mlflow",
    "set_result",
    "set_state",
    "take_over",
    "update_progress",
    "upgrade",
]
