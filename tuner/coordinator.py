"""The coordinator: one Optuna study per optimizer, trials on long-lived Ray workers.

For a job it

1. opens (or resumes) the study ``job-<id>-<optimizer>`` of every optimizer, all with the
   same sampler seed, trial budget and data split, so the comparison is fair by construction;
2. starts at most ``max_concurrent`` :class:`workers.actor.TrialWorker` actors, placed by Ray
   resources (``cpus_per_trial``, fractional ``gpus_per_trial``);
3. asks each study for a configuration whenever a worker is idle (the optimizers take turns),
   drives the worker epoch chunk by epoch chunk, reports to the pruner between chunks, and
   tells Optuna the outcome: COMPLETE, PRUNED or FAIL (a divergence is a FAIL whose MLflow
   state says DIVERGED: the protocol counts it, never drops it);
4. re-trains each optimizer's best setting with ``final_seeds`` seeds (MLflow runs tagged
   ``final``, not trials of the study: they would feed the sampler);
5. ranks the optimizers and builds the export.

A worker that dies takes its trial with it: the trial is told FAIL (``tuner.reason`` says
why), its configuration is enqueued again, a new worker replaces the dead one, and the lost
trial does not count against the budget.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tuner.config import Settings
from tuner.errors import JobInterrupted, JobStateError, TaskError, TunerError
from tuner.spec import JobSpec

if TYPE_CHECKING:
    import optuna

    from search_spaces import SearchSpace

__all__ = ["Coordinator", "JobCancelled", "JobOutcome", "JobProgress", "OptimizerProgress"]

logger = logging.getLogger(__name__)

#: Final re-runs use the seeds of DeepOBS (42, 43, ...), shifted by the job's seed.
FINAL_SEED_BASE = 42

#: Why a trial was lost rather than failed: it is re-run and does not count in the budget.
WORKER_DIED = "worker died"
RESTARTED = "coordinator restarted"
INTERRUPTED = "interrupted"
LOST = (WORKER_DIED, RESTARTED, INTERRUPTED)


class JobCancelled(JobStateError):
    """The job was cancelled while it ran."""


@dataclass
class OptimizerProgress:
    """Counts of one optimizer's study, as the progress bars and the jobs table show them."""

    name: str
    budget: int
    complete: int = 0
    pruned: int = 0
    diverged: int = 0
    failed: int = 0
    lost: int = 0  # trials lost with their worker or coordinator; re-run, not in the budget
    running: int = 0
    best: float | None = None
    best_trial: int | None = None
    final_total: int = 0
    final_done: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.diverged + self.failed

    @property
    def started(self) -> int:
        return self.finished + self.running

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "name"} | {
            "finished": self.finished
        }


@dataclass
class JobProgress:
    job_id: int
    metric: str
    mode: str
    phase: str = "starting"  # starting | search | final | done
    optimizers: dict[str, OptimizerProgress] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "optimizers": {
            name: p.to_dict() for name, p in self.optimizers.items()}}


@dataclass
class FinalRun:
    seed: int
    value: float | None
    state: str
    epochs: list[dict[str, Any]]


@dataclass
class TrialRecord:
    """One finished trial, as the report draws it (learning-rate sensitivity, tunability)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, DIVERGED, or LOST (re-run; not in the budget)
    value: float | None  # the metric at the trial's last epoch
    hyperparameters: dict[str, Any]
    epochs: int
    seconds: float
    curve: list[float]  # the metric per epoch
    finished_at: float  # seconds since the job started: the order trials ended in
    target_epoch: int | None = None  # the first epoch at the job's target, if it has one
    target_seconds: float | None = None  # training seconds until then


@dataclass
class OptimizerResult:
    """The outcome of one optimizer: its best trial and the final re-runs of it."""

    name: str
    space: SearchSpace
    best_value: float | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] | None = None  # Optuna's parameter names
    hyperparameters: dict[str, Any] | None = None  # the shared names, as logged
    config: dict[str, Any] | None = None  # OptimizerConfig.to_dict()
    best_run_id: str | None = None
    best_epochs: list[dict[str, Any]] = field(default_factory=list)
    finals: list[FinalRun] = field(default_factory=list)
    trials: list[TrialRecord] = field(default_factory=list)

    def to_dict(self, metric: str) -> dict[str, Any]:
        """What the job's stored result keeps for its report (JSON-able)."""

        def curves(epochs: list[dict[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {
                name: [e["metrics"].get(name) for e in epochs]
                for name in (epochs[0]["metrics"] if epochs else {})
            }
            if epochs and "position" in epochs[0]:
                out["position"] = [e.get("position") for e in epochs]
            out["seconds"] = [e.get("seconds") for e in epochs]
            return out

        return {
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "hyperparameters": self.hyperparameters,
            "config": self.config,
            "space": self.space.to_dict(),
            "best_curves": curves(self.best_epochs),
            "trials": [asdict(t) for t in sorted(self.trials, key=lambda t: t.number)],
            "finals": [{"seed": f.seed, "value": f.value, "state": f.state,
                        "curves": curves(f.epochs)} for f in self.finals],
        }


@dataclass
class JobOutcome:
    job_id: int
    spec: JobSpec
    results: dict[str, OptimizerResult]
    progress: JobProgress
    experiment_id: str
    job_run_id: str
    export: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    seconds: float
    problem: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)  # hashed by identity: a slot is in flight until it is handled
class _Slot:
    """One trial or final re-run in flight on a worker."""

    key: str
    optimizer: str
    kind: str  # "trial" | "final"
    number: int
    seed: int
    config: dict[str, Any]
    params: dict[str, Any]
    worker: Any
    hyper: dict[str, Any] = field(default_factory=dict)
    trial: optuna.trial.Trial | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def ensure_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (``RAY_ADDRESS``), or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    # Ray's start-up chatter (token authentication notice, ...) is not the user's business.
    logging.getLogger("ray").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        return
    # Workers import a user's `package.module:factory` from where tuner was started.
    path = os.pathsep.join([os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def make_sampler(spec: JobSpec) -> optuna.samplers.BaseSampler:
    import optuna

    seed = spec.seed
    match spec.sampler:
        case "tpe":
            # The constant liar keeps concurrent workers from asking for the same point.
            return optuna.samplers.TPESampler(
                seed=seed, constant_liar=spec.max_concurrent > 1, n_startup_trials=5
            )
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case "gp":
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=5, warn_independent_sampling=False
            )
        case "qmc":
            # AlgoPerf's baselines use quasi-random (Sobol) search.
            return optuna.samplers.QMCSampler(
                seed=seed, scramble=True, warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
    raise ValueError(spec.sampler)


def make_pruner(spec: JobSpec) -> optuna.pruners.BasePruner:
    import optuna

    match spec.pruner:
        case "none":
            return optuna.pruners.NopPruner()
        case "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=5, n_warmup_steps=max(1, spec.epochs // 5)
            )
        case "sha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
        case "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.epochs)
    raise ValueError(spec.pruner)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


class Coordinator:
    """Runs jobs: studies, workers, MLflow, results. Shared by ``tuner run`` and the service.

    Args:
        settings: Where the databases, MLflow and Ray are.
        on_progress: Called with a :class:`JobProgress` after every event (keep it cheap).
        should_cancel: Polled between events; ``True`` stops the job (``JobCancelled``).
        should_stop: Polled between events; ``True`` interrupts the job (``JobInterrupted``):
            its running trials are ended and enqueued again, to resume later.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_progress: Callable[[JobProgress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.on_progress = on_progress or (lambda progress: None)
        self.should_cancel = should_cancel or (lambda: False)
        self.should_stop = should_stop or (lambda: False)

    # -- the job ---------------------------------------------------------------------------

    def run(self, job_id: int, spec: JobSpec) -> JobOutcome:
        """Run a whole job: search, final re-runs, leaderboard, export.

        Raises:
            TaskError: the task does not build or does not report the job's metric.
            JobCancelled: ``should_cancel`` said so; every started trial is ended first.
        """
        import optuna
        import ray

        import search_spaces
        from tuner.tracking import JobTracker
        from workers.actor import TrialWorker

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.monotonic()
        self.settings.ensure_home()
        ensure_ray(self.settings.ray_address)

        spec_doc = spec.model_dump(mode="json")
        spaces = {
            name: search_spaces.load(name, spec.space_overrides.get(name))
            for name in spec.optimizers
        }
        storage = open_storage(self.settings.database_url)
        studies: dict[str, optuna.Study] = {}
        for name in spec.optimizers:
            study = optuna.create_study(
                storage=storage,
                study_name=spec.study_name(job_id, name),
                sampler=make_sampler(spec),
                pruner=make_pruner(spec),
                direction=spec.direction,
                load_if_exists=True,
            )
            study.set_user_attr("tuner.job", job_id)
            study.set_user_attr("tuner.optimizer", name)
            study.set_user_attr("tuner.task", spec.task)
            # Optuna does not store a study's sampler and pruner: say which they were.
            study.set_user_attr("tuner.sampler", type(study.sampler).__name__)
            study.set_user_attr("tuner.pruner", type(study.pruner).__name__)
            studies[name] = study

        self._progress = JobProgress(job_id=job_id, metric=spec.metric, mode=spec.mode)
        self._progress.optimizers = {
            name: OptimizerProgress(name=name, budget=spec.trials) for name in spec.optimizers
        }
        tracker = JobTracker(
            self.settings.tracking_uri, self.settings.artifact_root,
            job_id=job_id, job_name=spec.name,
        )
        tracker.start(spec=spec_doc, optimizers=spec.optimizers)
        self.tracker, self.spec, self.spaces, self.studies = tracker, spec, spaces, studies
        self.results = {name: OptimizerResult(name=name, space=spaces[name])
                        for name in spec.optimizers}
        # In flight: Ray object ref -> slot (a slot keys itself while its call is made).
        self._pending: dict[Any, _Slot] = {}
        self._final_queue: list[tuple[str, int]] = []
        self._finals_planned: set[str] = set()
        self._started = started
        self._deadline = started + spec.timeout_s if spec.timeout_s else math.inf
        self._workers: list[Any] = []
        self._info: dict[int, Any] = {}
        self.problem: dict[str, Any] = {}
        self._worker_options = {
            "num_cpus": spec.resources.cpus_per_trial,
            "num_gpus": spec.resources.gpus_per_trial,
        }
        self._worker_cls = TrialWorker
        status = "FAILED"
        try:
            self._start_workers()
            info = self._info[id(self._workers[0])]
            if spec.metric not in info.metrics:
                raise TaskError(
                    f"metric: task {spec.task!r} does not report {spec.metric!r}; it reports "
                    f"{', '.join(info.metrics)}"
                )
            self._train_size = info.train_size
            self.problem = {"task": spec.task, "train_size": info.train_size,
                            "val_size": info.val_size, "data_sha256": info.data_sha256}
            self._recover()
            for name, study in studies.items():
                if not study.trials:
                    # Trial 0 of every optimizer is its library defaults: "several
                    # optimizers at their defaults do about as well as tuning" (Crowded Valley).
                    study.enqueue_trial(spaces[name].defaults(train_size=self._train_size))
            self._progress.phase = "search"
            self._emit()
            self._loop()
            self._progress.phase = "done"
            self._emit()
            outcome = self._outcome(job_id, started)
            status = "FINISHED"
            return outcome
        except (JobCancelled, KeyboardInterrupt):
            status = "KILLED"  # Ctrl-C of `tuner run` cancels the job like `tuner cancel`
            raise
        except JobInterrupted:
            status = "INTERRUPTED"
            raise
        finally:
            self._abandon_pending(status)
            for worker in self._workers:
                ray.kill(worker, no_restart=True)
            if status != "FINISHED":
                try:
                    # An interrupted job's run is taken up again when the job resumes.
                    tracker.finish_job(status="KILLED" if status == "INTERRUPTED" else status,
                                       metrics={})
                except Exception as e:  # noqa: BLE001 - the job's own error matters more
                    logger.warning("could not end the MLflow job run: %s", e)
            tracker.close()

    # -- resuming --------------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over what an earlier coordinator of this job left (it was killed).

        Its finished trials count; its running trials are told FAIL (``coordinator
        restarted``) and enqueued again; every trial ends up with exactly one MLflow run in
        a final state, and final re-runs that were in flight are ended and run again.
        """
        import optuna
        from optuna.trial import TrialState

        from tuner.tracking import run_name

        tracker = self.tracker
        # The final re-runs are made anew by the resumed job: earlier ones are superseded.
        for run in tracker.runs("final"):
            key = f"recovered/final/{run.info.run_id}"
            tracker.adopt(key, run.info.run_id)
            if run.info.status == "RUNNING":
                tracker.run_finished(key, state="FAIL", epochs=[],
                                     tags={"tuner.reason": RESTARTED, "tuner.superseded": "true"})
            else:
                tracker.tag(key, {"tuner.superseded": "true"})
        recorded = tracker.recorded_runs("trial")
        states = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED",
                  TrialState.FAIL: "FAIL"}
        for name, study in self.studies.items():
            space, progress = self.spaces[name], self._progress.optimizers[name]
            for frozen in study.get_trials(deepcopy=False):
                if frozen.state == TrialState.WAITING:
                    continue  # enqueued, not started: the next ask takes it
                attrs = dict(frozen.user_attrs)
                if frozen.state == TrialState.RUNNING:
                    trial = optuna.trial.Trial(study, frozen._trial_id)
                    trial.set_user_attr("tuner_state", "FAIL")
                    trial.set_user_attr("reason", RESTARTED)
                    study.tell(trial, state=TrialState.FAIL)
                    study.enqueue_trial(frozen.params, user_attrs={"rerun_of": frozen.number},
                                        skip_if_exists=False)
                    attrs |= {"tuner_state": "FAIL", "reason": RESTARTED}
                state = attrs.get("tuner_state") or states[frozen.state]
                reason = attrs.get("reason")
                value = frozen.value if state == "COMPLETE" else None
                lost = bool(reason and reason.startswith(LOST))
                if lost:
                    progress.lost += 1
                elif state == "COMPLETE":
                    progress.complete += 1
                    if progress.best is None or self._better(value, progress.best):
                        progress.best, progress.best_trial = value, frozen.number
                elif state == "PRUNED":
                    progress.pruned += 1
                elif state == "DIVERGED":
                    progress.diverged += 1
                else:
                    progress.failed += 1
                if set(frozen.params) == set(space.distributions()):
                    hyper = space.hyperparameters(frozen.params, train_size=self._train_size)
                else:
                    # Killed inside `ask`, between two parameters: what was written is all
                    # there is (its re-run samples the rest).
                    hyper = dict(frozen.params)
                curve = [frozen.intermediate_values[k] for k in sorted(frozen.intermediate_values)]
                self.results[name].trials.append(TrialRecord(
                    number=frozen.number, state="LOST" if lost else state, value=value,
                    hyperparameters=hyper,
                    epochs=len(curve), seconds=0.0, curve=curve, finished_at=0.0,
                ))
                key = f"{name}/trial/{frozen.number}"
                tags = {"tuner.reason": reason} if reason else {}
                summary = {f"final_{self.spec.metric}": value} if value is not None else {}
                run = recorded.get((name, frozen.number))
                if run is None:  # its creation was still queued when the coordinator died
                    tracker.run_started(
                        key, optimizer=name, level="trial", number=frozen.number,
                        name=run_name(name, frozen.number, hyper), params=hyper,
                        tags={"tuner.seed": str(attrs.get("seed", "")),
                              "tuner.optuna_study": study.study_name},
                    )
                    tracker.run_finished(key, state=state, epochs=[], tags=tags,
                                         summary=summary)
                else:
                    tracker.adopt(key, run.info.run_id)
                    if run.info.status == "RUNNING":
                        tracker.run_finished(key, state=state, epochs=[], tags=tags,
                                             summary=summary)

    # -- workers ---------------------------------------------------------------------------

    def _start_workers(self) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        spec = self.spec
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        per_cpu, per_gpu = spec.resources.cpus_per_trial, spec.resources.gpus_per_trial
        fits = int(cpus // per_cpu)
        if per_gpu > 0:
            if gpus == 0:
                raise TunerError(
                    f"resources.gpus_per_trial: the job asks {per_gpu} GPU per trial, but the "
                    "Ray cluster has no GPU; set it to 0 or join a cluster with GPUs (RAY_ADDRESS)"
                )
            fits = min(fits, int(gpus // per_gpu))
        if fits < 1:
            raise TunerError(
                f"resources: one trial needs {per_cpu} CPU and {per_gpu} GPU, but the Ray "
                f"cluster has {cpus:g} CPU and {gpus:g} GPU"
            )
        count = min(spec.max_concurrent, fits, len(spec.optimizers) * spec.trials)
        self._workers = [self._new_worker() for _ in range(count)]
        self._idle = list(self._workers)
        # Building the task once per worker also loads and caches its data set there.
        try:
            infos = ray.get([worker.describe.remote() for worker in self._workers])
        except (RayActorError, RayTaskError) as e:
            cause = getattr(e, "cause", None) or e
            raise TaskError(
                f"task {spec.task!r}: the workers cannot build it: {type(cause).__name__}: "
                f"{cause}"
            ) from e
        self._info = {id(w): info for w, info in zip(self._workers, infos, strict=True)}

    def _new_worker(self) -> Any:
        threads = max(1, int(self.spec.resources.cpus_per_trial))
        return self._worker_cls.options(**self._worker_options).remote(
            self.spec.task, num_threads=threads
        )

    # -- the event loop --------------------------------------------------------------------

    def _loop(self) -> None:
        import ray

        last_emit = time.monotonic()
        while True:
            if self.should_cancel():
                raise JobCancelled(f"job {self._progress.job_id} was cancelled")
            if self.should_stop():
                raise JobInterrupted(f"job {self._progress.job_id} was interrupted")
            while self._idle and self._dispatch(self._idle[-1]):
                self._idle.pop()
            if not self._pending:
                return
            refs = [ref for ref in self._pending if not isinstance(ref, _Slot)]
            done, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            for ref in done:
                # The slot stays in flight until handled: if handling fails, the job's
                # clean-up still ends its trial everywhere.
                self._on_result(self._pending[ref], ref)
                del self._pending[ref]
            # Progress after every event, and at least every 2 s: it is the job's heartbeat.
            if done or time.monotonic() - last_emit >= 2.0:
                last_emit = time.monotonic()
                self._emit()

    def _dispatch(self, worker: Any) -> bool:
        """Give an idle worker its next trial or final re-run; False when there is none."""
        if time.monotonic() < self._deadline:
            candidates = [p for p in self._progress.optimizers.values()
                          if p.started < p.budget]
            if candidates:
                progress = min(candidates, key=lambda p: p.started)
                self._start_trial(worker, progress.name)
                return True
        self._plan_finals()
        if self._final_queue:
            name, seed = self._final_queue.pop(0)
            self._start_final(worker, name, seed)
            return True
        return False

    def _start_trial(self, worker: Any, name: str) -> None:
        import optuna

        from tuner.tracking import run_name

        study, space = self.studies[name], self.spaces[name]
        trial = study.ask(space.distributions())
        try:
            params = dict(trial.params)
            seed = self.spec.seed + trial.number
            hyper = space.hyperparameters(params, train_size=self._train_size)
            config = space.optimizer_config(params, train_size=self._train_size).to_dict()
            trial.set_user_attr("seed", seed)
        except BaseException:
            # Nothing has started: the trial must not stay RUNNING in Optuna.
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        slot = _Slot(key=f"{name}/trial/{trial.number}", optimizer=name, kind="trial",
                     number=trial.number, seed=seed, config=config, params=params,
                     worker=worker, hyper=hyper, trial=trial)
        self._progress.optimizers[name].running += 1
        self.tracker.run_started(
            slot.key, optimizer=name, level="trial", number=trial.number,
            name=run_name(name, trial.number, hyper), params=hyper,
            tags={"tuner.seed": str(seed), "tuner.optuna_study": study.study_name},
        )
        self._submit(slot, start=True)

    def _start_final(self, worker: Any, name: str, seed: int) -> None:
        result = self.results[name]
        assert result.config is not None and result.best_trial is not None
        slot = _Slot(key=f"{name}/final/{seed}", optimizer=name, kind="final",
                     number=result.best_trial, seed=seed, config=result.config,
                     params=result.best_params or {}, worker=worker)
        self.tracker.run_started(
            slot.key, optimizer=name, level="final", number=result.best_trial,
            name=f"{name} final seed={seed}", params=result.hyperparameters or {},
            tags={"tuner.seed": str(seed)},
        )
        self._submit(slot, start=True)

    def _chunk(self, slot: _Slot) -> int:
        # Between chunks the pruner decides and cancellation and the deadline are checked;
        # one actor call per epoch costs about a millisecond.
        if slot.kind == "trial" and self.spec.pruner != "none":
            return 1
        return max(1, min(5, self.spec.epochs // 4))

    def _submit(self, slot: _Slot, *, start: bool = False) -> None:
        self._pending[slot] = slot  # in flight from here on, whatever fails next
        if start:
            ref = slot.worker.start.remote(
                slot.key, slot.config, seed=slot.seed, epochs=self._chunk(slot),
                budget=self.spec.epochs,
            )
        else:
            ref = slot.worker.advance.remote(slot.key, epochs=self._chunk(slot))
        del self._pending[slot]
        self._pending[ref] = slot

    def _on_result(self, slot: _Slot, ref: Any) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            step = ray.get(ref)
        except RayActorError as e:
            self._on_worker_death(slot, e)
            return
        except RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            self._finish(slot, "FAIL", reason=f"{type(cause).__name__}: {cause}")
            return
        slot.epochs.extend(step.epochs)
        metric = self.spec.metric
        if slot.kind == "trial" and self.spec.pruner != "none":
            for report in step.epochs:
                value = report["metrics"].get(metric)
                if value is not None and math.isfinite(value):
                    slot.trial.report(value, report["epoch"])  # type: ignore[union-attr]
        if step.diverged:
            self._finish(slot, "DIVERGED", reason="the loss became NaN or inf")
        elif step.finished:
            self._finish(slot, "COMPLETE")
        elif slot.kind == "trial" and slot.trial.should_prune():  # type: ignore[union-attr]
            self._finish(slot, "PRUNED")
        elif slot.kind == "trial" and time.monotonic() >= self._deadline:
            reason = f"stopped at the job's timeout_s={self.spec.timeout_s:g}"
            self._finish(slot, "FAIL", reason=reason)
        else:
            self._submit(slot)

    def _on_worker_death(self, slot: _Slot, error: Exception) -> None:
        import ray

        reason = f"{WORKER_DIED}: {type(error).__name__}"
        logger.warning("%s while running %s; a new worker takes over", reason, slot.key)
        self._finish(slot, "FAIL", reason=reason, idle=False)
        progress = self._progress.optimizers[slot.optimizer]
        if slot.kind == "trial":
            progress.lost += 1
            self.studies[slot.optimizer].enqueue_trial(
                slot.params, user_attrs={"rerun_of": slot.number}, skip_if_exists=False
            )
        else:
            self._final_queue.insert(0, (slot.optimizer, slot.seed))
        self._workers.remove(slot.worker)
        ray.kill(slot.worker, no_restart=True)
        replacement = self._new_worker()
        self._workers.append(replacement)  # killed with the others, whatever happens next
        self._info[id(replacement)] = ray.get(replacement.describe.remote())
        self._idle.append(replacement)

    def _finish(self, slot: _Slot, state: str, *, reason: str | None = None,
                idle: bool = True) -> None:
        """End a trial or final run everywhere: Optuna, MLflow, the counts."""
        import optuna

        progress = self._progress.optimizers[slot.optimizer]
        metric = self.spec.metric
        value = slot.epochs[-1]["metrics"].get(metric) if slot.epochs else None
        if state == "COMPLETE" and (value is None or not math.isfinite(value)):
            state, reason = "FAIL", f"no finite {metric} at the last epoch"
        tags = {"tuner.reason": reason} if reason else {}
        info = self._info.get(id(slot.worker))
        if info is not None:
            tags |= {"tuner.node": info.node, "tuner.node_id": info.node_id,
                     "tuner.device": info.device}
        if slot.kind == "trial":
            trial = slot.trial
            assert trial is not None
            progress.running -= 1
            trial.set_user_attr("tuner_state", state)
            if reason:
                trial.set_user_attr("reason", reason[:500])
            if state == "COMPLETE":
                self.studies[slot.optimizer].tell(trial, value)
                progress.complete += 1
                if progress.best is None or self._better(value, progress.best):
                    progress.best, progress.best_trial = value, slot.number
                    self.results[slot.optimizer].best_epochs = slot.epochs
            elif state == "PRUNED":
                self.studies[slot.optimizer].tell(trial, state=optuna.trial.TrialState.PRUNED)
                progress.pruned += 1
            else:
                self.studies[slot.optimizer].tell(trial, state=optuna.trial.TrialState.FAIL)
                if state == "DIVERGED":
                    progress.diverged += 1
                elif not reason or not reason.startswith(LOST):
                    progress.failed += 1
            lost = bool(reason and reason.startswith(LOST))
            self.results[slot.optimizer].trials.append(TrialRecord(
                number=slot.number, state="LOST" if lost else state,
                value=value if state == "COMPLETE" else None,
                hyperparameters=slot.hyper, epochs=len(slot.epochs),
                seconds=sum(e["seconds"] for e in slot.epochs),
                curve=[e["metrics"].get(metric) for e in slot.epochs],
                finished_at=time.monotonic() - self._started,
            ))
        elif not (reason and reason.startswith(LOST)):  # a lost final run is run again
            progress.final_done += 1
            self.results[slot.optimizer].finals.append(
                FinalRun(seed=slot.seed, value=value if state == "COMPLETE" else None,
                         state=state, epochs=slot.epochs)
            )
        summary = {f"final_{metric}": value} if value is not None and state == "COMPLETE" else {}
        reached = self._time_to_target(slot.epochs)
        if reached is not None:
            summary |= {"epoch_at_target": reached[0], "seconds_to_target": reached[1]}
        if slot.kind == "trial" and reached is not None:
            record = self.results[slot.optimizer].trials[-1]
            record.target_epoch, record.target_seconds = reached
        self.tracker.run_finished(slot.key, state=state, epochs=slot.epochs, tags=tags,
                                  summary=summary)
        if idle:
            self._idle.append(slot.worker)

    def _time_to_target(self, epochs: list[dict[str, Any]]) -> tuple[int, float] | None:
        """The first epoch (and training seconds) at the job's ``target``, if reached."""
        from tuner.report import first_epoch_at

        if self.spec.target is None:
            return None
        epoch = first_epoch_at(epochs, self.spec.metric, self.spec.target, self.spec.mode)
        if epoch is None:
            return None
        return epoch, sum(e["seconds"] for e in epochs[:epoch])

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.spec.mode == "min" else a > b

    def _plan_finals(self) -> None:
        """Queue the final re-runs of every optimizer whose search has ended."""
        import optuna

        for name, progress in self._progress.optimizers.items():
            if name in self._finals_planned or progress.running:
                continue
            searching = (progress.started < progress.budget
                         and time.monotonic() < self._deadline)
            if searching:
                continue
            self._finals_planned.add(name)
            study, result = self.studies[name], self.results[name]
            complete = study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.COMPLETE,))
            if not complete:
                continue
            best = study.best_trial
            result.best_value, result.best_trial = best.value, best.number
            result.best_params = dict(best.params)
            space = self.spaces[name]
            result.hyperparameters = space.hyperparameters(best.params,
                                                           train_size=self._train_size)
            result.config = space.optimizer_config(best.params,
                                                   train_size=self._train_size).to_dict()
            result.best_run_id = None
            seeds = [FINAL_SEED_BASE + self.spec.seed + i for i in range(self.spec.final_seeds)]
            progress.final_total = len(seeds)
            self._final_queue.extend((name, seed) for seed in seeds)
            if seeds:
                self._progress.phase = "final"

    def _abandon_pending(self, status: str) -> None:
        """End whatever is still in flight (an error or a cancellation): nothing is left
        RUNNING in Optuna or MLflow."""
        reason = {"KILLED": "job cancelled", "INTERRUPTED": INTERRUPTED}.get(status, "job failed")
        for slot in list(self._pending.values()):
            try:
                self._finish(slot, "FAIL", reason=reason, idle=False)
                if status == "INTERRUPTED" and slot.kind == "trial":
                    # Lost, not failed: its configuration runs again when the job resumes.
                    self._progress.optimizers[slot.optimizer].lost += 1
                    self.studies[slot.optimizer].enqueue_trial(
                        slot.params, user_attrs={"rerun_of": slot.number}, skip_if_exists=False
                    )
            except Exception as e:  # noqa: BLE001 - keep ending the others
                logger.warning("could not end %s: %s", slot.key, e)
        self._pending.clear()

    def _emit(self) -> None:
        try:
            self.on_progress(self._progress)
        except Exception as e:  # noqa: BLE001 - a display must never stop a job
            logger.warning("progress callback failed: %s", e)

    # -- results ---------------------------------------------------------------------------

    def _outcome(self, job_id: int, started: float) -> JobOutcome:
        from tuner.export import build_export
        from tuner.report import leaderboard

        self._plan_finals()  # optimizers whose search ended without a final phase
        for name, result in self.results.items():
            if result.best_trial is not None:
                result.best_run_id = self.tracker.run_id(f"{name}/trial/{result.best_trial}")
        board = leaderboard(self.spec, self.results, self._progress)
        export = build_export(job_id, self.spec, self.results, board)
        for row in board:
            name = row["optimizer"]
            result = self.results[name]
            metrics = {f"best_{self.spec.metric}": row["best"],
                       f"final_mean_{self.spec.metric}": row["mean"],
                       f"final_std_{self.spec.metric}": row["std"],
                       "rank": row["rank"]}
            self.tracker.log_optimizer(
                name, metrics={k: v for k, v in metrics.items() if v is not None},
                params={f"best.{k}": v for k, v in (result.hyperparameters or {}).items()},
                headline=_headline(row),
            )
        return JobOutcome(
            job_id=job_id, spec=self.spec, results=self.results, progress=self._progress,
            experiment_id=self.tracker.experiment_id, job_run_id=self.tracker.job_run_id,
            export=export, leaderboard=board, seconds=time.monotonic() - started,
            problem=self.problem,
        )



def _headline(row: dict[str, Any]) -> str:
    """``#1 0.9739±0.0054`` (final mean ± std) or ``#3 best 0.97`` without final runs."""
    if row["mean"] is not None:
        return f"#{row['rank']} {row['mean']:.4g}±{row['std']:.2g}"
    if row["best"] is not None:
        return f"#{row['rank']} best {row['best']:.4g}"
    return f"#{row['rank']} no result"
