"""Ends of jobs the jobs database did not hear of, for :mod:`tuner.engine.service`.

A job's end (failed, cancelled) is written by :func:`tuner.engine.jobs.run_job`; when the database
is away at that moment the write fails and the API would show the job ``running`` for ever,
with its cancel doing nothing. :class:`JobEnds` writes such an end once the database answers
again (retried with backoff, then on every round of the service's loop), ends ``running``
jobs of the server that no thread runs any more (``cancelled`` when a cancel was asked), and
closes their books: their RUNNING and WAITING Optuna trials and RUNNING MLflow runs end too
(:func:`tuner.engine.recovery.close_books`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import select

from tuner import store
from tuner.config import Settings
from tuner.engine.recovery import close_books
from tuner.errors import DatabaseUnavailableError

__all__ = ["JobEnds"]

logger = logging.getLogger("tuner.engine.service")


class _Books(NamedTuple):
    """A job whose trials and runs are to be closed (:func:`tuner.engine.recovery.close_books`)."""

    job_id: int
    name: str
    optimizers: list[str]
    reason: str


class JobEnds:
    """The ends of jobs still to be written, and the books still to be closed.

    Args:
        settings: The jobs database (and ``TUNER_DB_RETRY_S``), Optuna's and MLflow's stores.
        stopping: ``True`` once the server stops (retries end early).
    """

    def __init__(self, settings: Settings, *, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.stopping = stopping
        self._lock = threading.Lock()
        # Jobs whose end could not be written (the database was away): state, error, message.
        self._unsettled: dict[int, tuple[str, str | None, str | None]] = {}

    def unsettled(self) -> list[int]:
        """Jobs whose end is not written yet."""
        with self._lock:
            return sorted(self._unsettled)

    def settle(self, job_id: int, state: str, *, error: str | None = None,
               message: str | None = None) -> None:
        """Make the jobs table say that job ``job_id`` ended (``state``), if it still says
        ``running`` (run_job could not write it: the database was away); a cancel that was
        asked wins over a failure. Retried while the database is away
        (``TUNER_DB_RETRY_S``), then left to the service's loop."""
        try:
            books = store.retrying(
                self.settings.database_url,
                lambda session: self._write_end(session, job_id, state, error, message),
                budget_s=self.settings.db_retry_s, what=f"job {job_id}",
                stop=self.stopping)
        except DatabaseUnavailableError as e:
            logger.warning("job %s: its end (%s) is not written yet: %s", job_id, state, e)
            with self._lock:
                self._unsettled[job_id] = (state, error, message)
            return
        self.close_books(books)

    @staticmethod
    def _write_end(session: Any, job_id: int, state: str, error: str | None,
                   message: str | None) -> _Books | None:
        job = store.get_job(session, job_id)
        spec = dict(job.spec or {})
        books = _Books(job_id, str(spec.get("name") or job.name),
                       [str(o) for o in spec.get("optimizers", [])], "")
        if job.state in (store.JobState.FAILED, store.JobState.CANCELLED):
            # Its end was written; its coordinator may still have left trials open.
            return books._replace(reason=f"job {job.state}: {job.error or ''}".strip())
        if job.state != store.JobState.RUNNING:
            return None  # it succeeded, or was requeued
        if job.cancel_requested and state == store.JobState.FAILED:
            state, message = store.JobState.CANCELLED, f"cancelled (it had failed: {error})"
            error = None
        store.set_state(session, job, state, error=error, message=message)
        logger.info("job %s: recorded as %s", job_id, state)
        # Its coordinator could not end its trials (the database was away, or it is gone):
        # the caller closes its books once this is committed.
        return books._replace(reason=f"job {state}: {error or message or ''}".strip())

    def settle_pending(self) -> None:
        with self._lock:
            pending = dict(self._unsettled)
        for job_id, (state, error, message) in pending.items():
            with store.session_scope(self.settings.database_url) as session:
                books = self._write_end(session, job_id, state, error, message)
            with self._lock:
                self._unsettled.pop(job_id, None)
            self.close_books(books)

    def end_orphans(self, ours: set[int]) -> None:
        """End the ``running`` jobs of this server that no thread of it runs any more
        (one server per database): ``cancelled`` if a cancel was asked, else ``failed``."""
        with store.session_scope(self.settings.database_url) as session:
            rows = session.execute(
                select(store.Job.id).where(store.Job.state == store.JobState.RUNNING.value,
                                           store.Job.origin == "api")).all()
            with self._lock:
                ours = ours | set(self._unsettled)
            ended = []
            for (job_id,) in rows:
                if job_id in ours:
                    continue
                logger.error("job %s: running, but no coordinator thread of this server runs "
                             "it; ending it", job_id)
                ended.append(self._write_end(
                    session, job_id, store.JobState.FAILED,
                    "the server's coordinator stopped running it without recording its end "
                    "(see the server log)", None))
        for books in ended:
            self.close_books(books)

    def close_books(self, books: _Books | None) -> None:
        """End the job's RUNNING trials in Optuna and runs in MLflow (best effort: logged)."""
        if books is None:
            return
        try:
            trials, runs = close_books(self.settings, books.job_id, job_name=books.name,
                                       optimizers=books.optimizers, reason=books.reason)
        except Exception as e:  # noqa: BLE001 - the state is written; the rest is logged
            logger.warning("job %s: could not end its Optuna trials and MLflow runs: %s: %s",
                           books.job_id, type(e).__name__, e)
            return
        if trials or runs:
            logger.info("job %s: ended %d Optuna trials and %d MLflow runs left running",
                        books.job_id, trials, runs)

    def fail_on_error(self, job_id: int, what: str, call: Callable[[], bool]) -> bool:
        """``call()``; an error of it is the queued job's own: the job fails (``what``: the
        error), the caller goes on with the next one, and ``False`` is returned."""
        try:
            return call()
        except Exception as e:
            logger.exception("job %s: %s", job_id, what)
            self.fail_queued(job_id, f"{what}: {type(e).__name__}: {e}")
            return False

    def fail_queued(self, job_id: int, error: str) -> None:
        with store.session_scope(self.settings.database_url) as session:
            job = store.get_job(session, job_id)
            if job.state == store.JobState.QUEUED:
                store.set_state(session, job, store.JobState.FAILED, error=error)
