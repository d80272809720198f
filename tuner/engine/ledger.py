"""Where every trial and final re-run of a job begins and ends: Optuna, MLflow, the counts.

The invariant it keeps (docs/design.md, "Nothing is lost"): every trial the coordinator starts
ends in Optuna (COMPLETE, PRUNED or FAIL), in MLflow (a run with the same number and a final
status) and in the job's counts, with the same outcome. The coordinator decides *when* a
trial ends and *how* (a :class:`~tuner.results.TrialOutcome`); the :class:`Ledger` records
it everywhere at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner.analysis.statistics import first_epoch_at
from tuner.results import (
    FinalRun,
    JobProgress,
    OptimizerProgress,
    OptimizerResult,
    TrialOutcome,
    TrialRecord,
    final_seeds,
    is_finite,
)
from tuner.retry import is_database_outage
from tuner.tracking import run_name

if TYPE_CHECKING:
    from search_spaces import SearchSpace
    from tuner.spec import JobSpec
    from tuner.tracking import JobTracker
    from workers.actor import WorkerInfo

__all__ = ["ASK_INTERRUPTED", "CURVE", "Ledger", "Slot"]

#: Why a trial whose ``study.ask`` met a database outage was lost (it is run again).
ASK_INTERRUPTED = "the database went away while the trial was asked"

#: The Optuna user attribute with a trial's ``[epoch, metric]`` pairs when no pruner was
#: told them as intermediate values (recovery logs them to MLflow if the run missed them).
CURVE = "curve"


@dataclass(eq=False)  # hashed by identity: a slot is in flight until it is handled
class Slot:
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
    applied: Any = None  # the worker result last added to ``epochs``

    def apply(self, epochs: list[dict[str, Any]], result: Any) -> None:
        """Add a worker result's epochs, once per result (its handling may be retried)."""
        if self.applied is not result:
            self.epochs.extend(epochs)
            self.applied = result


class Ledger:
    """The books of one job: its studies, its MLflow runs, its counts and its results.

    Args:
        job_id: The job's id in the jobs table.
        spec: The job.
        studies: The Optuna study of every optimizer (:func:`tuner.engine.studies.open_studies`).
        spaces: The search space of every optimizer.
        tracker: The job's MLflow runs, started.
        started: ``time.monotonic()`` when the job started (trials record when they ended).
    """

    def __init__(self, job_id: int, spec: JobSpec, *, studies: dict[str, optuna.Study],
                 spaces: dict[str, SearchSpace], tracker: JobTracker, started: float) -> None:
        self.spec = spec
        self.studies = studies
        self.spaces = spaces
        self.tracker = tracker
        self.started = started
        self.train_size = 0  # set when the workers have described the task
        self.progress = JobProgress(job_id=job_id, metric=spec.metric, mode=spec.mode)
        self.progress.optimizers = {
            name: OptimizerProgress(name=name, budget=spec.trials) for name in spec.optimizers
        }
        self.results = {name: OptimizerResult(name=name, space=spaces[name])
                        for name in spec.optimizers}
        self._in_flight: dict[str, set[int]] = {name: set() for name in spec.optimizers}
        self._interrupted_asks: set[str] = set()  # studies whose last ask met an outage

    # -- beginning -------------------------------------------------------------------------

    def begin_trial(self, name: str, worker: Any) -> Slot:
        """Ask optimizer ``name``'s study for its next trial and open its MLflow run.

        ``study.ask`` writes a trial in several steps (create it RUNNING, then each
        parameter); a database outage between them leaves a RUNNING trial nobody runs. The
        call is repeated once the database is back (:mod:`tuner.engine.ride_out`), and that
        repetition first ends such a trial as lost (:data:`ASK_INTERRUPTED`): told FAIL,
        counted, recorded in MLflow and enqueued to run again, as a resumed job does with a
        trial its killed coordinator was asking.
        """
        study, space = self.studies[name], self.spaces[name]
        self._end_interrupted_asks(name)
        trial: optuna.trial.Trial | None = None
        try:
            trial = study.ask(space.distributions())
            params = dict(trial.params)
            seed = self.spec.seed + trial.number
            hyper = space.hyperparameters(params, train_size=self.train_size)
            config = space.optimizer_config(params, train_size=self.train_size,
                                            epochs=self.spec.epochs).to_dict()
            trial.set_user_attr("seed", seed)
        except BaseException as e:
            if is_database_outage(e):
                self._interrupted_asks.add(name)
            elif trial is not None:
                # Nothing has started: the trial must not stay RUNNING in Optuna.
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        return self._open_trial(name, trial, seed=seed, params=params, hyper=hyper,
                                config=config, worker=worker)

    def _open_trial(self, name: str, trial: optuna.trial.Trial, *, seed: int,
                    params: dict[str, Any], hyper: dict[str, Any], config: dict[str, Any],
                    worker: Any) -> Slot:
        """A trial asked of optimizer ``name``'s study is in flight: counted, in MLflow."""
        slot = Slot(key=f"{name}/trial/{trial.number}", optimizer=name, kind="trial",
                    number=trial.number, seed=seed, config=config, params=params,
                    worker=worker, hyper=hyper, trial=trial)
        self.progress.optimizers[name].running += 1
        self._in_flight[name].add(trial.number)
        self.tracker.run_started(
            slot.key, optimizer=name, level="trial", number=trial.number,
            name=run_name(name, trial.number, hyper), params=hyper,
            tags={"tuner.seed": str(seed), "tuner.optuna_study": trial.study.study_name},
        )
        return slot

    def _end_interrupted_asks(self, name: str) -> None:
        """End as lost the trials an ask of ``name``'s study that met a database outage
        left RUNNING (none when the outage came before Optuna wrote the trial)."""
        if name not in self._interrupted_asks:
            return
        study, space = self.studies[name], self.spaces[name]
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in self._in_flight[name]:
                continue
            params = dict(frozen.params)
            hyper = (space.hyperparameters(params, train_size=self.train_size)
                     if set(params) == set(space.distributions()) else params)
            trial = optuna.trial.Trial(study, frozen._trial_id)
            slot = self._open_trial(name, trial, seed=self.spec.seed + frozen.number,
                                    params=params, hyper=hyper, config={}, worker=None)
            self.end(slot, TrialOutcome.LOST, reason=ASK_INTERRUPTED)
        self._interrupted_asks.discard(name)

    def begin_final(self, name: str, seed: int, worker: Any) -> Slot:
        """Open the MLflow run of one final re-run of optimizer ``name``'s best setting."""
        result = self.results[name]
        if result.config is None or result.best_trial is None:
            raise RuntimeError(f"{name} has no best trial to re-run")
        slot = Slot(key=f"{name}/final/{seed}", optimizer=name, kind="final",
                    number=result.best_trial, seed=seed, config=result.config,
                    params=result.best_params or {}, worker=worker,
                    hyper=result.hyperparameters or {})
        self.tracker.run_started(
            slot.key, optimizer=name, level="final", number=result.best_trial,
            name=f"{name} final seed={seed}", params=result.hyperparameters or {},
            tags={"tuner.seed": str(seed)},
        )
        return slot

    # -- ending ----------------------------------------------------------------------------

    def end(self, slot: Slot, outcome: TrialOutcome, *, reason: str | None = None,
            where: WorkerInfo | None = None) -> TrialOutcome:
        """End a trial or final run everywhere: Optuna, MLflow, the counts, the results.

        A COMPLETE run without a finite metric at its last epoch ends as FAIL; the outcome
        it ended with is returned. A LOST trial is told FAIL to Optuna and enqueued again
        (it does not count against the budget); a LOST final run is not recorded (the
        caller runs it again).
        """
        progress = self.progress.optimizers[slot.optimizer]
        metric = self.spec.metric
        value = slot.epochs[-1]["metrics"].get(metric) if slot.epochs else None
        if outcome is TrialOutcome.COMPLETE and (value is None or not math.isfinite(value)):
            outcome, reason = TrialOutcome.FAIL, f"no finite {metric} at the last epoch"
        tags = {"tuner.reason": reason} if reason else {}
        if where is not None:
            tags |= {"tuner.node": where.node, "tuner.node_id": where.node_id,
                     "tuner.device": where.device}
        reached = self.time_to_target(slot.epochs)
        if slot.kind == "trial":
            self._tell(slot, outcome, value, reason)
            progress.running -= 1
            self._in_flight[slot.optimizer].discard(slot.number)
            progress.count(outcome, number=slot.number, value=value, mode=self.spec.mode)
            if outcome is TrialOutcome.COMPLETE and progress.best_trial == slot.number:
                self.results[slot.optimizer].best_epochs = slot.epochs
            self.results[slot.optimizer].trials.append(TrialRecord(
                number=slot.number, state=outcome.value,
                value=value if outcome is TrialOutcome.COMPLETE else None,
                hyperparameters=slot.hyper, epochs=len(slot.epochs),
                seconds=sum(e["seconds"] for e in slot.epochs),
                curve=[e["metrics"].get(metric) for e in slot.epochs],
                finished_at=time.monotonic() - self.started,
                target_epoch=reached[0] if reached else None,
                target_seconds=reached[1] if reached else None,
            ))
        elif outcome is not TrialOutcome.LOST:  # a lost final run is run again
            progress.final_done += 1
            self.results[slot.optimizer].finals.append(
                FinalRun(seed=slot.seed,
                         value=value if outcome is TrialOutcome.COMPLETE else None,
                         state=outcome.value, epochs=slot.epochs)
            )
        summary: dict[str, float] = {}
        if value is not None and outcome is TrialOutcome.COMPLETE:
            summary[f"final_{metric}"] = value
        if reached is not None:
            summary |= {"epoch_at_target": reached[0], "seconds_to_target": reached[1]}
        self.tracker.run_finished(slot.key, state=outcome.mlflow_state, epochs=slot.epochs,
                                  tags=tags, summary=summary)
        return outcome

    def _tell(self, slot: Slot, outcome: TrialOutcome, value: float | None,
              reason: str | None) -> None:
        """Tell Optuna how a trial ended; a lost one is enqueued to run again."""
        trial, study = slot.trial, self.studies[slot.optimizer]
        if trial is None:
            raise RuntimeError(f"{slot.key} is not a trial")
        if self._told_already(slot, outcome):
            return
        trial.set_user_attr("tuner_state", outcome.value)
        if reason:
            trial.set_user_attr("reason", reason[:500])
        if self.spec.pruner == "none" and slot.epochs:
            # No pruner was told the epochs: keep the metric's curve with the trial, so a
            # coordinator killed before MLflow has them can still log them on recovery.
            trial.set_user_attr(CURVE, self._curve(slot))
        penalty = self._penalty(slot) if outcome is TrialOutcome.DIVERGED else None
        # skip_if_finished: a tell repeated after a database outage (the first one may have
        # been written before the connection dropped) is not an error.
        if outcome is TrialOutcome.COMPLETE:
            study.tell(trial, value, skip_if_finished=True)
        elif outcome is TrialOutcome.PRUNED:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        elif penalty is not None:
            self._tell_penalty(slot, penalty)
        else:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if outcome is TrialOutcome.LOST:
            study.enqueue_trial(slot.params, user_attrs={"rerun_of": slot.number},
                                skip_if_exists=False)

    def _tell_penalty(self, slot: Slot, penalty: float) -> None:
        """The sampler learns that this region diverges: the trial is a result as bad as the
        worst the study has seen (DeepOBS, Crowded Valley: a diverged run is the worst
        result). Its steps from the divergence on carry the same value, so the pruner's
        medians count it as bad, not as absent."""
        trial, study = slot.trial, self.studies[slot.optimizer]
        assert trial is not None
        trial.set_user_attr("penalty", penalty)
        if self.spec.pruner != "none":
            reported = {e["epoch"] for e in slot.epochs
                        if is_finite(e["metrics"].get(self.spec.metric))}
            for step in range(max(reported, default=0) + 1, self.spec.epochs + 1):
                trial.report(penalty, step)
        study.tell(trial, penalty, skip_if_finished=True)

    def _curve(self, slot: Slot) -> list[list[Any]]:
        """The job's metric per epoch of ``slot``, ``[[epoch, value or None], ...]``."""
        values = [e["metrics"].get(self.spec.metric) for e in slot.epochs]
        return [[e["epoch"], v if is_finite(v) else None]
                for e, v in zip(slot.epochs, values, strict=True)]

    def _told_already(self, slot: Slot, outcome: TrialOutcome) -> bool:
        """Whether this is a tell repeated after a database outage: the first one was written
        before the connection dropped (its attributes with it; a finished trial takes no
        more). A lost trial's re-run is enqueued if the first attempt did not get that far."""
        study = self.studies[slot.optimizer]
        assert slot.trial is not None
        if not study._storage.get_trial(slot.trial._trial_id).state.is_finished():
            return False
        if outcome is TrialOutcome.LOST and not any(
                t.user_attrs.get("rerun_of") == slot.number
                for t in study.get_trials(deepcopy=False)):
            study.enqueue_trial(slot.params, user_attrs={"rerun_of": slot.number},
                                skip_if_exists=False)
        return True

    def _penalty(self, slot: Slot) -> float | None:
        """What the sampler is told of a diverged trial (``diverged_as: worst``): the worst
        finite value of the study's completed trials and of this trial's own epochs;
        ``None`` (told FAIL) with ``diverged_as: fail`` or when nothing finite is known."""
        if self.spec.diverged_as != "worst":
            return None
        study = self.studies[slot.optimizer]
        values = [t.value for t in study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))]
        values += [e["metrics"].get(self.spec.metric) for e in slot.epochs]
        finite = [float(v) for v in values if is_finite(v)]
        if not finite:
            return None
        return max(finite) if self.spec.mode == "min" else min(finite)

    def close_waiting(self, name: str, *, reason: str) -> None:
        """End the enqueued trials of a study that will not run (its search is over), as
        FAIL with ``reason`` in Optuna, MLflow and the counts: nothing stays WAITING."""
        study = self.studies[name]
        self._end_interrupted_asks(name)
        for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.end(self.begin_trial(name, worker=None), TrialOutcome.FAIL, reason=reason)

    def time_to_target(self, epochs: list[dict[str, Any]]) -> tuple[int, float] | None:
        """The first epoch (and training seconds) at the job's ``target``, if reached."""
        if self.spec.target is None:
            return None
        epoch = first_epoch_at(epochs, self.spec.metric, self.spec.target, self.spec.mode)
        if epoch is None:
            return None
        return epoch, sum(e["seconds"] for e in epochs[:epoch])

    # -- the final re-runs -----------------------------------------------------------------

    def select_best(self, name: str) -> list[int]:
        """Take optimizer ``name``'s best trial as its result; the seeds to re-run it with
        (none when no trial completed)."""
        study, result = self.studies[name], self.results[name]
        # A diverged trial told as the worst result is COMPLETE to Optuna, never the best.
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.user_attrs.get("tuner_state", "COMPLETE") == "COMPLETE"]
        if not complete:
            return []
        pick = min if self.spec.mode == "min" else max
        best = pick(complete, key=lambda t: float(t.value if t.value is not None else "nan"))
        result.best_value, result.best_trial = best.value, best.number
        result.best_params = dict(best.params)
        space = self.spaces[name]
        result.hyperparameters = space.hyperparameters(best.params, train_size=self.train_size)
        result.config = space.optimizer_config(best.params, train_size=self.train_size,
                                               epochs=self.spec.epochs).to_dict()
        result.best_run_id = None
        seeds = final_seeds(self.spec.seed, self.spec.final_seeds)
        self.progress.optimizers[name].final_total = len(seeds)
        return seeds

    def link_best_runs(self) -> None:
        """Point every optimizer's result at the MLflow run of its best trial."""
        for name, result in self.results.items():
            if result.best_trial is not None:
                result.best_run_id = self.tracker.run_id(f"{name}/trial/{result.best_trial}")
