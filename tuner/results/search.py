"""What a running job counts and what its search returns (the coordinator's side).

What a running job counts (:class:`JobProgress`, one :class:`OptimizerProgress` per study),
what each finished trial and final re-run leaves (:class:`TrialRecord`, :class:`FinalRun`),
what an optimizer ends with (:class:`OptimizerResult`), what the search returns
(:class:`SearchResult`) and what a finished job holds (:class:`JobOutcome`).
:meth:`OptimizerProgress.count` is the one place that turns outcomes into the counts the
progress bars, the jobs table and the leaderboard show, used by the live loop and by the
recovery of a killed job alike; :meth:`OptimizerResult.to_dict` is what the jobs table stores
of an optimizer (read back by :mod:`tuner.results.stored`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from tuner.results.outcome import TrialOutcome, better
from tuner.results.stored import Curves

if TYPE_CHECKING:
    from search_spaces import SearchSpace
    from tuner.spec import JobSpec

__all__ = ["FinalRun", "JobOutcome", "JobProgress", "OptimizerProgress", "OptimizerResult",
           "SearchResult", "TrialRecord"]


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

    def count(self, outcome: TrialOutcome, *, number: int, value: float | None,
              mode: str) -> None:
        """Count one finished trial; a complete one may be the new best."""
        match outcome:
            case TrialOutcome.COMPLETE:
                self.complete += 1
                if value is not None and (self.best is None or better(value, self.best, mode)):
                    self.best, self.best_trial = value, number
            case TrialOutcome.PRUNED:
                self.pruned += 1
            case TrialOutcome.DIVERGED:
                self.diverged += 1
            case TrialOutcome.FAIL:
                self.failed += 1
            case TrialOutcome.LOST:
                self.lost += 1

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "name"} | {
            "finished": self.finished
        }

    @classmethod
    def from_dict(cls, name: str, stored: dict[str, Any]) -> OptimizerProgress:
        """The inverse of :meth:`to_dict` (unknown keys, e.g. ``finished``, are ignored)."""
        known = {f.name for f in fields(cls)} - {"name"}
        return cls(name=name, **{k: v for k, v in stored.items() if k in known})


@dataclass
class JobProgress:
    """A running job's counts: its phase and one :class:`OptimizerProgress` per optimizer."""

    job_id: int
    metric: str
    mode: str
    phase: str = "starting"  # starting | search | final | done
    optimizers: dict[str, OptimizerProgress] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "optimizers": {
            name: p.to_dict() for name, p in self.optimizers.items()}}

    @classmethod
    def from_dict(cls, stored: dict[str, Any] | None, *, job_id: int, metric: str,
                  mode: str) -> JobProgress:
        """A job's progress as the jobs table (or ``GET /v1/jobs/{id}``) stores it."""
        stored = stored or {}
        return cls(
            job_id=job_id, metric=metric, mode=mode, phase=stored.get("phase", "starting"),
            optimizers={name: OptimizerProgress.from_dict(name, counts)
                        for name, counts in (stored.get("optimizers") or {}).items()},
        )


@dataclass
class FinalRun:
    """One re-run of an optimizer's best setting with another seed (not a trial)."""

    seed: int
    value: float | None
    state: str
    epochs: list[dict[str, Any]]


@dataclass
class TrialRecord:
    """One finished trial, as the report draws it (learning-rate sensitivity, tunability)."""

    number: int
    state: str  # a TrialOutcome value
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

        return {
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "hyperparameters": self.hyperparameters,
            "config": self.config,
            "space": self.space.to_dict(),
            "best_curves": Curves.from_epochs(self.best_epochs).to_dict(),
            "trials": [asdict(t) for t in sorted(self.trials, key=lambda t: t.number)],
            "finals": [{"seed": f.seed, "value": f.value, "state": f.state,
                        "curves": Curves.from_epochs(f.epochs).to_dict()} for f in self.finals],
        }


@dataclass
class SearchResult:
    """What the coordinator returns: every optimizer's result, the counts, where MLflow has
    it, and how long each phase of the job took (``phases``: seconds since the job started,
    when ``ray`` was up, the ``studies`` open, the ``mlflow`` runs started, the ``workers``
    up, the ``first_trial`` dispatched, the ``search`` over (the final re-runs began) and
    everything ``done``)."""

    job_id: int
    spec: JobSpec
    results: dict[str, OptimizerResult]
    progress: JobProgress
    experiment_id: str
    job_run_id: str
    seconds: float
    problem: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    lr_range: dict[str, dict[str, Any]] = field(default_factory=dict)  # tuner.lr_range


@dataclass
class JobOutcome(SearchResult):
    """A finished job: the search result with its leaderboard and its export document."""

    export: dict[str, Any] = field(default_factory=dict)
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
