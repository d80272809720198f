"""Jobs left ``running`` by a server process that is gone, or parked by one that stops, go
back to the queue (``tuner serve`` runs them again)."""

from __future__ import annotations

from datetime import UTC, datetime

from tuner import store
from tuner.errors import TunerError

__all__ = ["requeue_orphans"]


def requeue_orphans(url: str, *, message: str) -> list[int]:
    """Move the ``running`` jobs of the service back to ``queued``; their ids.

    Called when a server starts (the jobs were left by a previous server process) and when
    it stops (the jobs it parked). Assumes one server per jobs database. A job of a local
    ``tuner run`` (origin ``cli``) belongs to that process: it is left alone while its
    heartbeat is fresh (``tuner resume`` takes over one whose process died).
    """
    requeued = []
    now = datetime.now(UTC)
    with store.session_scope(url) as session:
        for job in store.list_jobs(session, limit=10_000, state=store.JobState.RUNNING):
            beat = job.heartbeat_at or job.started_at
            fresh = beat is not None and (now - beat).total_seconds() < store.STALE_AFTER_S
            if job.origin == "cli" and fresh:
                continue
            try:
                store.set_state(session, job, store.JobState.QUEUED, message=message)
            except TunerError:
                continue  # it finished or moved meanwhile
            requeued.append(job.id)
    return requeued
