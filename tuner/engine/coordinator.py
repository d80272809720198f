"""The coordinator: one Optuna study per optimizer, trials on long-lived Ray workers.

For a job it

1. opens (or resumes) the study ``job-<id>-<optimizer>`` of every optimizer, all with the
   same sampler seed, trial budget and data split, so the comparison is fair by construction
   (:mod:`tuner.engine.studies`);
2. starts at most ``max_concurrent`` :class:`workers.actor.TrialWorker` actors, placed by Ray
   resources (``cpus_per_trial``, fractional ``gpus_per_trial``) (:mod:`tuner.engine.cluster`);
3. asks each study for a configuration whenever a worker is idle (the optimizers take turns),
   drives the worker epoch chunk by epoch chunk, reports to the pruner between chunks, and
   ends the trial everywhere with its :class:`~tuner.results.TrialOutcome`: COMPLETE, PRUNED,
   DIVERGED or FAIL (:mod:`tuner.engine.ledger`);
4. re-trains each optimizer's best setting with ``final_seeds`` seeds (MLflow runs tagged
   ``final``, not trials of the study: they would feed the sampler; :mod:`tuner.engine.finals`);
5. returns the :class:`~tuner.results.SearchResult`; :mod:`tuner.engine.jobs` ranks it, exports it
   and records it.

A worker that dies takes its trial with it: the trial is LOST (told FAIL to Optuna,
``tuner.reason`` says why), its configuration is enqueued again, a new worker replaces the
dead one, and the lost trial does not count against the budget. A coordinator that was
killed is taken over by the next one (:mod:`tuner.engine.recovery`).

A database outage (the jobs and studies database unreachable) pauses the job: the call that
failed is made again once the database answers, for up to ``TUNER_DB_RETRY_S`` (the workers
keep their results meanwhile), so the job goes on with its exact budget; a longer outage fails
the job (:mod:`tuner.engine.ride_out`).

A coordinator runs one job once::

    coordinator = Coordinator(settings, job_id, spec, tracker, on_progress=print)
    result = coordinator.run()
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError, RayTaskError

import search_spaces
from tuner.engine.cluster import WarmWorkers, WorkerPool, ensure_ray
from tuner.engine.finals import FinalRuns
from tuner.engine.ledger import Ledger, Slot
from tuner.engine.lr_range import narrow_lr_ranges
from tuner.engine.recovery import recover
from tuner.engine.ride_out import riding_out
from tuner.engine.studies import open_storage, open_studies
from tuner.errors import JobCancelled, JobInterrupted, TaskError
from tuner.results import JobProgress, SearchResult, TrialOutcome

if TYPE_CHECKING:
    import optuna

    from tuner.config import Settings
    from tuner.spec import JobSpec
    from tuner.tracking import JobTracker

__all__ = ["Coordinator"]


logger = logging.getLogger(__name__)

#: Why a trial was lost rather than failed: it is re-run and does not count in the budget.
WORKER_DIED = "worker died"
INTERRUPTED = "interrupted"


class Coordinator:
    """Runs one job once: studies, workers, the event loop. Shared by ``tuner run`` and the
    service.

    Creating it gets the job going, three things at once: this thread joins (or starts) Ray
    and then starts the workers (each builds the task and loads its data), while a helper
    thread opens the Optuna studies and starts the job's MLflow runs (their imports and
    stores are the other half of the start-up time). :meth:`run` runs the search and the
    final re-runs.

    Args:
        settings: Where the databases, MLflow and Ray are.
        job_id: The job's id in the jobs table.
        spec: The job.
        tracker: The job's MLflow side (not started yet); the caller closes it.
        on_progress: Called with a :class:`JobProgress` after every event (keep it cheap).
        should_cancel: Polled between events; ``True`` stops the job (``JobCancelled``).
        should_stop: Polled between events; ``True`` interrupts the job (``JobInterrupted``):
            its running trials are ended and enqueued again, to resume later.
        warm: Idle workers of earlier jobs (``tuner serve``): taken when they fit the job,
            left there when it finishes.
    """

    def __init__(
        self,
        settings: Settings,
        job_id: int,
        spec: JobSpec,
        tracker: JobTracker,
        *,
        on_progress: Callable[[JobProgress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        should_stop: Callable[[], bool] | None = None,
        warm: WarmWorkers | None = None,
    ) -> None:
        self.started = time.monotonic()
        #: Seconds since the start at the end of each start-up phase (benchmarks read it).
        self.phases: dict[str, float] = {}
        self.job_id, self.spec, self.tracker = job_id, spec, tracker
        self.on_progress = on_progress or (lambda progress: None)
        self.should_cancel = should_cancel or (lambda: False)
        self.should_stop = should_stop or (lambda: False)
        self._ride = riding_out(settings, what=f"job {job_id}")
        settings.ensure_home()
        spaces = {name: search_spaces.load(name, spec.space_overrides.get(name))
                  for name in spec.optimizers}
        self.pool = WorkerPool(spec, warm=warm, settings=settings)
        self.problem: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-start") as helper:
            stores = helper.submit(_open_stores, settings, job_id, spec, tracker, self._mark)
            try:
                # Ray stays in this thread: a local Ray's daemons die with the thread that
                # started them.
                ensure_ray(settings.ray_address)
                self._mark("ray")
                self._start_workers()
            except BaseException:
                self.pool.shutdown()
                stores.exception()  # let the helper finish before the error goes up
                raise
            try:
                studies = stores.result()
            except BaseException:
                self.pool.shutdown()
                raise
        self.ledger = Ledger(job_id, spec, studies=studies, spaces=spaces, tracker=tracker,
                             started=self.started)
        self.ledger.train_size = self.problem["train_size"] or 0  # None: a training loop
        self.lr_range: dict[str, dict[str, Any]] = {}
        # In flight: Ray object ref -> slot (a slot keys itself while its call is made).
        self._pending: dict[Any, Slot] = {}
        self.finals = FinalRuns(self.ledger, self._mark)
        self._deadline = math.inf  # set when the search starts: timeout_s is its time

    @property
    def progress(self) -> JobProgress:
        """The job's counts, live."""
        return self.ledger.progress

    # -- the job ---------------------------------------------------------------------------

    def run(self) -> SearchResult:
        """Run the search and the final re-runs; the result of every optimizer.

        Raises:
            TaskError: the task does not build or does not report the job's metric.
            JobCancelled: ``should_cancel`` said so; every started trial is ended first.
            JobInterrupted: ``should_stop`` said so; running trials are enqueued again.
        """
        status = "FAILED"
        try:
            if self.spec.lr_range_test:
                self.lr_range = narrow_lr_ranges(self.ledger, self.pool)
                self._mark("lr_range")
            recover(self.ledger)
            for name, study in self.ledger.studies.items():
                if not study.trials:
                    # Trial 0 is the library defaults (Crowded Valley: often about as good).
                    study.enqueue_trial(
                        self.ledger.spaces[name].defaults(train_size=self.ledger.train_size))
            self.progress.phase = "search"
            if self.spec.timeout_s:
                self._deadline = time.monotonic() + self.spec.timeout_s
            self._emit()
            self._loop()
            self._mark("done")
            self.progress.phase = "done"
            self._emit()
            self.finals.plan(self._deadline)  # searches that ended without a final phase
            self.ledger.link_best_runs()
            status = "FINISHED"
        except (JobCancelled, KeyboardInterrupt):
            status = "KILLED"  # Ctrl-C of `tuner run` cancels the job like `tuner cancel`
            raise
        except JobInterrupted:
            status = "INTERRUPTED"
            raise
        finally:
            self._abandon_pending(status)
            self.pool.shutdown(keep=status == "FINISHED")
        return SearchResult(
            job_id=self.job_id, spec=self.spec, results=self.ledger.results,
            progress=self.progress, experiment_id=self.tracker.experiment_id,
            job_run_id=self.tracker.job_run_id, seconds=time.monotonic() - self.started,
            problem=self.problem, phases=dict(self.phases), lr_range=self.lr_range,
        )

    def _start_workers(self) -> None:
        spec = self.spec
        info = self.pool.start()
        self._mark("workers")
        # A training loop's metrics are known when it first reports (its worker checks).
        if info.metrics is not None and spec.metric not in info.metrics:
            raise TaskError(
                f"metric: task {spec.task!r} does not report {spec.metric!r}; it reports "
                f"{', '.join(info.metrics)}"
            )
        self.problem = {"task": spec.task, "train_size": info.train_size,
                        "val_size": info.val_size, "data_sha256": info.data_sha256}

    def _mark(self, phase: str) -> None:
        self.phases[phase] = time.monotonic() - self.started

    # -- the event loop --------------------------------------------------------------------

    def _loop(self) -> None:
        last_emit = time.monotonic()
        while True:
            if self.should_cancel():
                raise JobCancelled(f"job {self.job_id} was cancelled")
            if self.should_stop():
                raise JobInterrupted(f"job {self.job_id} was interrupted")
            self.tracker.check()  # MLflow away past TUNER_MLFLOW_RETRY_S fails the job
            idle = self.pool.idle
            while idle and self._ride(partial(self._dispatch, idle[-1])) is True:
                idle.pop()
            if not self._pending:
                return
            refs = [ref for ref in self._pending if not isinstance(ref, Slot)]
            done, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            for ref in done:
                # The slot stays in flight until handled: if handling fails, the job's
                # clean-up still ends its trial everywhere.
                self._ride(partial(self._on_result, self._pending[ref], ref))
                del self._pending[ref]
            # Progress after every event, and at least every 2 s: it is the job's heartbeat.
            if done or time.monotonic() - last_emit >= 2.0:
                last_emit = time.monotonic()
                self._emit()

    def _dispatch(self, worker: Any) -> bool:
        """Give an idle worker its next trial or final re-run; False when there is none."""
        if time.monotonic() < self._deadline:
            # Reproducible: a study asks its next trial only once every earlier one was
            # told, so what it asks never depends on timing; the optimizers still run side
            # by side (each study has its own sampler, seeded alike).
            candidates = [p for p in self.progress.optimizers.values()
                          if p.started < p.budget
                          and not (self.spec.reproducible and p.running)]
            if candidates:
                progress = min(candidates, key=lambda p: p.started)
                self._submit(self.ledger.begin_trial(progress.name, worker), start=True)
                if "first_trial" not in self.phases:
                    self._mark("first_trial")
                return True
        self.finals.plan(self._deadline)
        final = self.finals.next()
        if final is None:
            return False
        name, seed = final
        self._submit(self.ledger.begin_final(name, seed, worker), start=True)
        return True

    def _submit(self, slot: Slot, *, start: bool = False) -> None:
        self._pending[slot] = slot  # in flight from here on, whatever fails next
        epochs = _epochs_per_call(self.spec, slot)
        if start:
            # A training loop reads its hyperparameters from the config (trial.hyperparameters)
            # and checks its first report for the job's metric.
            config = {**slot.config, "hyperparameters": slot.hyper}
            ref = slot.worker.start.remote(slot.key, config, seed=slot.seed, epochs=epochs,
                                           budget=self.spec.epochs, metric=self.spec.metric)
        else:
            ref = slot.worker.advance.remote(slot.key, epochs=epochs)
        del self._pending[slot]
        self._pending[ref] = slot

    def _on_result(self, slot: Slot, ref: Any) -> None:
        step = self._step_of(slot, ref)
        if step is None:
            return
        slot.apply(step.epochs, ref)  # once, however often its handling is retried
        trial = slot.trial
        if trial is not None and self.spec.pruner != "none":
            _report_to_pruner(trial, step.epochs, self.spec.metric)
        outcome, reason = _verdict(step, trial, self.spec, self._deadline)
        if outcome is None:
            self._submit(slot)
        else:
            self._end(slot, outcome, reason=reason)

    def _step_of(self, slot: Slot, ref: Any) -> Any:
        """The worker's answer, or None when the trial ended without one (its worker died,
        or the call raised)."""
        try:
            return ray.get(ref)  # again, when handling it met a database outage
        except RayActorError as e:
            self._on_worker_death(slot, e)
            return None
        except RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, TaskError):
                # The task itself is broken (e.g. a training loop that does not report the
                # job's metric): no other trial would fare better. The job fails.
                raise TaskError(str(cause)) from e
            self._end(slot, TrialOutcome.FAIL, reason=f"{type(cause).__name__}: {cause}")
            return None

    def _on_worker_death(self, slot: Slot, error: Exception) -> None:
        reason = f"{WORKER_DIED}: {type(error).__name__}"
        logger.warning("%s while running %s; a new worker takes over", reason, slot.key)
        self._end(slot, TrialOutcome.LOST, reason=reason, idle=False)
        if slot.kind == "final":
            self.finals.again(slot.optimizer, slot.seed)
        self.pool.replace(slot.worker)

    def _end(self, slot: Slot, outcome: TrialOutcome, *, reason: str | None = None,
             idle: bool = True) -> None:
        self.ledger.end(slot, outcome, reason=reason, where=self.pool.info(slot.worker))
        if idle:
            self.pool.release(slot.worker)

    def _abandon_pending(self, status: str) -> None:
        """End whatever is still in flight (an error or a cancellation): nothing is left
        RUNNING in Optuna or MLflow. An interrupted job's trials are LOST: they run again
        when the job resumes."""
        outcome, reason = {
            "KILLED": (TrialOutcome.FAIL, "job cancelled"),
            "INTERRUPTED": (TrialOutcome.LOST, INTERRUPTED),
        }.get(status, (TrialOutcome.FAIL, "job failed"))
        for slot in list(self._pending.values()):
            try:
                self._end(slot, outcome, reason=reason, idle=False)
            except Exception as e:  # noqa: BLE001 - keep ending the others
                logger.warning("could not end %s: %s", slot.key, e)
        self._pending.clear()

    def _emit(self) -> None:
        try:
            self.on_progress(self.progress)
        except Exception as e:  # noqa: BLE001 - a display must never stop a job
            logger.warning("progress callback failed: %s", e)


def _report_to_pruner(trial: optuna.trial.Trial, epochs: list[dict[str, Any]],
                      metric: str) -> None:
    for report in epochs:
        value = report["metrics"].get(metric)
        if value is not None and math.isfinite(value):
            trial.report(value, report["epoch"])


def _verdict(step: Any, trial: optuna.trial.Trial | None, spec: JobSpec,
             deadline: float) -> tuple[TrialOutcome | None, str | None]:
    """How a worker's step ends its trial (the outcome and why), or ``(None, None)``: the
    trial goes on."""
    if step.error:  # a training loop raised: "Type: message"
        return TrialOutcome.FAIL, step.error
    if step.diverged:
        return TrialOutcome.DIVERGED, "the loss became NaN or inf"
    if step.finished:
        return TrialOutcome.COMPLETE, None
    if trial is not None and trial.should_prune():
        return TrialOutcome.PRUNED, None
    if trial is not None and time.monotonic() >= deadline:
        return TrialOutcome.FAIL, f"stopped at the job's timeout_s={spec.timeout_s:g}"
    return None, None


def _open_stores(settings: Settings, job_id: int, spec: JobSpec, tracker: JobTracker,
                 mark: Callable[[str], None]) -> dict[str, optuna.Study]:
    """The studies and the job's MLflow runs (in the start-up helper thread)."""
    studies = open_studies(open_storage(settings.database_url), job_id, spec)
    mark("studies")
    tracker.start(spec=spec.model_dump(mode="json"), optimizers=spec.optimizers)
    mark("mlflow")
    return studies


def _epochs_per_call(spec: JobSpec, slot: Slot) -> int:
    """Epochs a worker trains per call. Between calls the pruner decides and cancellation
    and the deadline are checked; one actor call costs about a millisecond."""
    if slot.kind == "trial" and spec.pruner != "none":
        return 1
    return max(1, min(5, spec.epochs // 4))
