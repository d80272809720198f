"""The coordinator loop of ``tuner serve``: queued jobs in, at most ``TUNER_MAX_JOBS`` at once.

One background thread claims the oldest queued job from the jobs table whenever a slot is
free (every 0.5 s, or at once when the API stores a job) and runs it with
:func:`tuner.engine.jobs.run_job` in a thread of its own; Ray is started (or joined, with
``RAY_ADDRESS``) once, by this loop, and shared by the jobs.

- **Cancel**: a job's ``should_cancel`` reads ``cancel_requested`` from the store at most
  every 0.5 s; the coordinator then ends every started trial and the job is ``cancelled``.
- **Start**: the jobs table is migrated and jobs left ``running`` by a previous server
  process are requeued (one server per database); the coordinator resumes their studies.
- **Stop** (SIGINT/SIGTERM): no new job is claimed; running jobs are interrupted at their
  next check (their running trials end as FAIL "interrupted" and are enqueued again), go back
  to ``queued``, and Ray is shut down. The next server start resumes them.
- **Errors**: the loop survives any error: one of a job (that job fails, the loop goes on)
  or of the database (it retries with backoff). A job whose end could not be written because
  the database was away is settled when it answers again (``failed``, or ``cancelled`` if a
  cancel was asked); a ``running`` job of this server that no thread runs any more is ended
  the same way, so a cancel is always honoured. :meth:`Service.describe` says what is wrong
  (``/healthz`` answers 503 then): a dead or stuck loop, Ray unreachable, the database away.

Example::

    service = Service(get_settings(), max_jobs=2)
    service.start()
    ...
    service.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any

import ray
from sqlalchemy import select

from tuner import store
from tuner.config import Settings
from tuner.engine.admission import Admission
from tuner.engine.cluster import WarmWorkers, ensure_ray
from tuner.engine.health import LoopHealth
from tuner.engine.job_ends import JobEnds
from tuner.engine.jobs import cancel_check, run_job
from tuner.engine.requeue import requeue_orphans
from tuner.engine.studies import open_storage
from tuner.errors import JobCancelled, JobInterrupted, JobStateError, TunerError
from tuner.retry import until_stopped
from tuner.spec import parse_job

__all__ = ["Service"]

logger = logging.getLogger(__name__)

#: How often the loop looks for queued jobs, and a running job for its cancel flag.
POLL_S = 0.5


class Service:
    """Runs queued jobs in the background of ``tuner serve``.

    Args:
        settings: The jobs database, MLflow and Ray of the server.
        max_jobs: Jobs run at once (default: ``settings.max_jobs``, ``TUNER_MAX_JOBS``).
        poll_s: How often to look for queued jobs and cancel requests.
    """

    def __init__(self, settings: Settings, *, max_jobs: int | None = None,
                 poll_s: float = POLL_S) -> None:
        max_jobs = settings.max_jobs if max_jobs is None else max_jobs
        if max_jobs < 1:
            raise TunerError(f"max_jobs: got {max_jobs}; allowed: >= 1")
        self.settings = settings
        self.max_jobs = max_jobs
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[int, threading.Thread] = {}
        self._loop_thread: threading.Thread | None = None
        self._loop_done = threading.Event()  # the loop claims no more jobs
        self._ray_released = threading.Event()  # stop() has shut Ray down
        self._ray_started = False
        self._stopped = False
        self.ray_error: str | None = None
        # The last job's idle workers, for the next job on the same task and resources.
        self.warm = WarmWorkers()
        self.admission = Admission(self.warm)
        self.requeued: list[int] = []
        self.health = LoopHealth()
        # Ends of jobs the database did not hear of (it was away), and orphans.
        self.ends = JobEnds(settings, stopping=self._stopping.is_set)

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the jobs table, requeue jobs left running, start the loop thread."""
        self.settings.ensure_home()
        store.upgrade(self.settings.database_url)
        # Optuna creates its tables when a storage is first opened on a database; two jobs
        # starting at once on a new database would both try (and one fail).
        open_storage(self.settings.database_url).remove_session()
        self.requeued = requeue_orphans(
            self.settings.database_url, message="requeued: the server that ran it stopped"
        )
        if self.requeued:
            logger.info("requeued jobs left running by a previous server: %s", self.requeued)
        self._loop_thread = threading.Thread(target=self._loop, name="tuner-coordinator",
                                             daemon=True)
        self._loop_thread.start()

    def wake(self) -> None:
        """Look for queued jobs now (the API calls this after storing one)."""
        self._wake.set()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop claiming, park and requeue running jobs, shut Ray down.

        Running jobs stop at their next cancel check (within about a second, or when their
        current Ray call returns, e.g. when their workers have started), and are requeued for
        the next server start. A job still busy after ``timeout`` is requeued too, and Ray
        is shut down under it.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._wake.set()
        if self._loop_thread is not None:
            # A loop still starting (or joining an unreachable) Ray is inside ray.init, which
            # does not return for tens of seconds: nothing of it needs stopping.
            self._loop_done.wait(timeout=timeout if self._ray_started else 1.0)
        alive = self._wait_for_jobs(timeout)
        if alive:
            logger.warning("jobs %s did not stop within %.0f s", alive, timeout)
            ids = requeue_orphans(self.settings.database_url,
                                  message="requeued: the server stopped")
            logger.info("requeued running jobs %s for the next server start", ids)
        try:
            if self._ray_started:
                self.warm.clear()
                # Wait for the local Ray's processes to end: if the server exits right after
                # a plain shutdown, the raylet's DashboardAgent and RuntimeEnvAgent can outlive
                # it (Ray 2.60). Joined to a cluster, this only disconnects.
                ray.shutdown(wait_for_processes=True)
                self._ray_started = False
        finally:
            self._ray_released.set()
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)

    def _wait_for_jobs(self, timeout: float) -> list[int]:
        """Wait up to ``timeout`` for the jobs' threads to end; the jobs still running."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                alive = [i for i, t in self._threads.items() if t.is_alive()]
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.1)

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` shows: the slots, the jobs running here, Ray, the loop, and
        ``problems`` (empty when the service can work; ``/healthz`` is 503 otherwise)."""
        with self._lock:
            running = sorted(i for i, t in self._threads.items() if t.is_alive())
        ray = ("error: " + self.ray_error if self.ray_error
               else "up" if self._ray_started else "starting")
        return {"max_jobs": self.max_jobs, "running": running,
                "unsettled": self.ends.unsettled(), "ray": ray,
                **self.health.describe(self._loop_thread, stopping=self._stopping.is_set(),
                                       ray=ray, ray_address=self.settings.ray_address)}

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            if not self._start_ray():
                return
            # A round that fails is made again, 1 s doubling to 8 s later (or at once when
            # woken): the loop outlives any error.
            while until_stopped(self._round, stopped=self._stopping.is_set,
                                failed=lambda error, _: self.health.failed(error),
                                first_s=1.0, longest_s=8.0, sleep=self._nap):
                self.health.ok()
                self._nap(self.poll_s)
        except BaseException as e:
            self.health.loop_error = f"{type(e).__name__}: {e}"
            logger.exception("coordinator loop stopped")
            raise
        finally:
            self._loop_done.set()
            # The local Ray's daemons die with the *thread* that started them (Ray sets
            # PR_SET_PDEATHSIG, which Linux fires when the parent thread exits): this thread
            # lives until stop() has ended the running jobs and shut Ray down.
            if self._ray_started:
                self._ray_released.wait()

    def _nap(self, seconds: float) -> None:
        """Wait ``seconds``, or until :meth:`wake` or :meth:`stop` is called."""
        self._wake.wait(seconds)
        self._wake.clear()

    def _round(self) -> None:
        """One round of the loop: settle ended jobs, end orphans, start queued jobs."""
        self.health.beat = time.monotonic()
        self.ends.settle_pending()
        with self._lock:
            ours = set(self._threads)
        self.ends.end_orphans(ours)
        while self._free_slots() > 0 and not self._stopping.is_set():
            if not self._start_next():
                break

    def _start_ray(self) -> bool:
        """Start or join Ray, again 1 s doubling to 60 s later while it fails; False when
        the server stopped first."""

        def start() -> None:
            self.health.beat = time.monotonic()
            ensure_ray(self.settings.ray_address)

        def failed(error: Exception, wait: float) -> None:
            self.ray_error = f"{type(error).__name__}: {error}"
            logger.error("cannot start or join Ray (retrying in %.0f s): %s", wait, error)

        if not until_stopped(start, stopped=self._stopping.is_set, failed=failed,
                             first_s=1.0, longest_s=60.0, sleep=self._stopping.wait):
            return False
        self.ray_error = None
        self._ray_started = True
        return True

    def _free_slots(self) -> int:
        with self._lock:
            for job_id in [i for i, t in self._threads.items() if not t.is_alive()]:
                del self._threads[job_id]
            return self.max_jobs - len(self._threads)

    def _start_next(self) -> bool:
        """Take the oldest queued job and start its thread; False when none is queued or
        it does not fit on Ray yet."""
        url = self.settings.database_url
        with store.session_scope(url) as session:
            with self._lock:
                started = list(self._threads)
            oldest = (select(store.Job.id, store.Job.spec)
                      .where(store.Job.state == store.JobState.QUEUED.value)
                      .order_by(store.Job.id).limit(1))
            if started:
                oldest = oldest.where(store.Job.id.not_in(started))
            candidate = session.execute(oldest).first()
            if candidate is None:
                return False
            if not self.ends.fail_on_error(candidate.id, "cannot be scheduled",
                                           partial(self.admission.fits, dict(candidate.spec))):
                return False
            # The job that was checked, and only if it is still queued.
            job = store.claim_next_queued(session, job_id=candidate.id)
            if job is None:
                return False
            job_id, spec = job.id, dict(job.spec)
        thread = threading.Thread(target=self._run, args=(job_id, spec),
                                  name=f"tuner-job-{job_id}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        self.admission.starting(job_id)
        logger.info("job %s: started (%s)", job_id, spec.get("name"))
        thread.start()
        return True

    def _run(self, job_id: int, spec_doc: dict[str, Any]) -> None:
        url = self.settings.database_url
        started = time.monotonic()
        try:
            spec = parse_job(spec_doc, source=f"job {job_id}")
        except TunerError as e:
            # Stored when valid; a search space or task may have gone since.
            with store.session_scope(url) as session:
                job = store.get_job(session, job_id)
                store.set_state(session, job, store.JobState.FAILED, error=str(e))
            logger.error("job %s: failed: %s", job_id, e)
            return
        try:
            run_job(self.settings, job_id, spec, warm=self.warm,
                    on_progress=partial(self.admission.progress, job_id),
                    should_cancel=cancel_check(self.settings.database_url, job_id,
                                               every_s=self.poll_s),
                    should_stop=self._stopping.is_set)
        except JobInterrupted:
            logger.info("job %s: interrupted by the server's stop; requeued", job_id)
        except JobCancelled as e:
            logger.info("job %s: cancelled after %.0f s", job_id, time.monotonic() - started)
            self.ends.settle(job_id, store.JobState.CANCELLED, message=str(e))
        except JobStateError as e:
            logger.info("job %s: not run: %s", job_id, e)  # cancelled before it started
        except BaseException as e:  # noqa: BLE001 - run_job recorded it; keep the server up
            logger.error("job %s: failed after %.0f s: %s: %s", job_id,
                         time.monotonic() - started, type(e).__name__, e)
            self.ends.settle(job_id, store.JobState.FAILED, error=f"{type(e).__name__}: {e}")
        else:
            logger.info("job %s: succeeded in %.0f s", job_id, time.monotonic() - started)
        finally:
            self.admission.placed(job_id)  # or never will be
            self._wake.set()  # a slot (and Ray's resources) are free: look at the queue
