"""A finished job's stored result, typed: ``JobResult.from_dict(job.result)``.

What ``tuner.engine.jobs`` stores in the jobs table (``Job.result``, plain JSON) read back
into frozen types: a :class:`JobResult` of :class:`StoredOptimizer` (their
:class:`StoredTrial`, :class:`StoredFinal` and per-epoch :class:`Curves`, the
:class:`StoredParam` of their search space), the :class:`LeaderboardRow`, the
:class:`LrRangeCurve` and a landscape task's :class:`LandscapeInfo`. Each ``from_dict`` takes
what any version of tuner stored: a field an older result lacks gets its default, and an
unknown state reads as ``FAIL``. States are :class:`~tuner.results.outcome.TrialOutcome`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tuner.results.outcome import TrialOutcome, is_finite

__all__ = ["Curves", "JobResult", "LandscapeInfo", "LeaderboardRow", "LrRangeCurve",
           "StoredFinal", "StoredOptimizer", "StoredParam", "StoredTrial", "jsonable",
           "outcome_of"]


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN and inf become null (PostgreSQL's JSON refuses them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _number(value: Any) -> float | None:
    """A stored number: ``None`` stays ``None`` (NaN and inf were stored as ``null``)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _point(value: Any) -> tuple[float, float] | None:
    """A stored ``[x, y]``, or ``None`` when it is not two finite numbers."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(is_finite(v) for v in value):
        return (float(value[0]), float(value[1]))
    return None


def outcome_of(state: Any) -> TrialOutcome:
    """The :class:`TrialOutcome` of a stored state string (an unknown one is a ``FAIL``)."""
    try:
        return TrialOutcome(state)
    except ValueError:
        return TrialOutcome.FAIL


@dataclass(frozen=True)
class Curves:
    """A run's per-epoch series: each metric's values, the training seconds of each epoch and,
    for a two-parameter landscape, the position ``(x, y)`` at each epoch's end."""

    metrics: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    seconds: tuple[float | None, ...] = ()
    positions: tuple[tuple[float, float] | None, ...] = ()

    def of(self, metric: str) -> tuple[float | None, ...]:
        """The values of ``metric`` per epoch (empty when the run did not report it)."""
        return self.metrics.get(metric, ())

    @classmethod
    def from_epochs(cls, epochs: Sequence[Mapping[str, Any]]) -> Curves:
        """The series of a run's epoch reports (``{"epoch", "metrics", "seconds", ...}``)."""
        names = list(dict.fromkeys(name for e in epochs for name in e["metrics"]))
        return cls(
            metrics={name: tuple(e["metrics"].get(name) for e in epochs) for name in names},
            seconds=tuple(e.get("seconds") for e in epochs),
            positions=(tuple(_point(e.get("position")) for e in epochs)
                       if epochs and "position" in epochs[0] else ()),
        )

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any] | None) -> Curves:
        stored = stored or {}
        return cls(
            metrics={name: tuple(_number(v) for v in values or ())
                     for name, values in stored.items() if name not in ("seconds", "position")},
            seconds=tuple(_number(v) for v in stored.get("seconds") or ()),
            positions=tuple(_point(p) for p in stored.get("position") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form: ``{metric: [...], "position": [[x, y], ...], "seconds": [...]}``."""
        out: dict[str, Any] = {name: list(values) for name, values in self.metrics.items()}
        if self.positions:
            out["position"] = [list(p) if p is not None else None for p in self.positions]
        out["seconds"] = list(self.seconds)
        return out


@dataclass(frozen=True)
class StoredTrial:
    """One finished trial as the stored result keeps it (a :class:`TrialRecord`)."""

    number: int
    state: TrialOutcome
    value: float | None = None  # the metric at the last epoch of a COMPLETE trial
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    curve: tuple[float | None, ...] = ()  # the metric per epoch
    finished_at: float = 0.0
    target_epoch: int | None = None
    target_seconds: float | None = None

    @property
    def lr(self) -> float | None:
        """The trial's learning rate, when it has a positive finite one."""
        lr = self.hyperparameters.get("lr")
        return float(lr) if is_finite(lr) and lr > 0 else None

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> StoredTrial:
        return cls(
            number=int(stored.get("number", 0)),
            state=outcome_of(stored.get("state")),
            value=_number(stored.get("value")),
            hyperparameters=dict(stored.get("hyperparameters") or {}),
            epochs=int(stored.get("epochs") or 0),
            seconds=_number(stored.get("seconds")) or 0.0,
            curve=tuple(_number(v) for v in stored.get("curve") or ()),
            finished_at=_number(stored.get("finished_at")) or 0.0,
            target_epoch=_int(stored.get("target_epoch")),
            target_seconds=_number(stored.get("target_seconds")),
        )


@dataclass(frozen=True)
class StoredFinal:
    """One final re-run of an optimizer's best setting as stored (a :class:`FinalRun`)."""

    seed: int | None
    value: float | None
    state: TrialOutcome
    curves: Curves = field(default_factory=Curves)

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> StoredFinal:
        return cls(seed=_int(stored.get("seed")), value=_number(stored.get("value")),
                   # Results stored before final runs had a state held only complete ones.
                   state=outcome_of(stored.get("state", TrialOutcome.COMPLETE)),
                   curves=Curves.from_dict(stored.get("curves")))


@dataclass(frozen=True)
class StoredParam:
    """One parameter of an optimizer's search space as stored (``SearchSpace.to_dict()``;
    the range of a ``one_minus`` parameter is that of ``q = 1 - value``)."""

    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    one_minus: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def span(self) -> tuple[float, float] | None:
        """The smallest and largest value searched: a float's bounds, or a categorical's
        smallest and largest number."""
        if self.kind == "float" and self.low is not None and self.high is not None:
            return self.low, self.high
        if self.choices and all(is_finite(c) for c in self.choices):
            return float(min(self.choices)), float(max(self.choices))
        return None

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> StoredParam:
        return cls(kind=str(stored.get("type", "categorical")), low=_number(stored.get("low")),
                   high=_number(stored.get("high")), log=bool(stored.get("log")),
                   one_minus=bool(stored.get("one_minus")),
                   choices=tuple(stored.get("choices") or ()))


@dataclass(frozen=True)
class StoredOptimizer:
    """One optimizer of a stored result (:meth:`OptimizerResult.to_dict`)."""

    best_value: float | None = None
    best_trial: int | None = None
    hyperparameters: Mapping[str, Any] | None = None  # of the best trial
    config: Mapping[str, Any] | None = None
    params: Mapping[str, StoredParam] = field(default_factory=dict)  # its search space
    best_curves: Curves = field(default_factory=Curves)
    trials: tuple[StoredTrial, ...] = ()
    finals: tuple[StoredFinal, ...] = ()

    @property
    def complete_trials(self) -> tuple[StoredTrial, ...]:
        return tuple(t for t in self.trials if t.state is TrialOutcome.COMPLETE)

    @property
    def best_lr(self) -> float | None:
        lr = (self.hyperparameters or {}).get("lr")
        return float(lr) if is_finite(lr) else None

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> StoredOptimizer:
        return cls(
            best_value=_number(stored.get("best_value")),
            best_trial=_int(stored.get("best_trial")),
            hyperparameters=stored.get("hyperparameters"),
            config=stored.get("config"),
            params={name: StoredParam.from_dict(p)
                    for name, p in ((stored.get("space") or {}).get("params") or {}).items()},
            best_curves=Curves.from_dict(stored.get("best_curves")),
            trials=tuple(StoredTrial.from_dict(t) for t in stored.get("trials") or ()),
            finals=tuple(StoredFinal.from_dict(f) for f in stored.get("finals") or ()),
        )


@dataclass(frozen=True)
class LeaderboardRow:
    """One row of a job's leaderboard (``tuner.analysis.statistics.leaderboard``)."""

    optimizer: str
    best: float | None = None  # the best trial's value
    mean: float | None = None  # of the final re-runs
    std: float | None = None
    ci95: float | None = None  # half-width, Student's t
    seeds: int = 0  # final re-runs with a value
    finals_diverged: int = 0
    finals_failed: int = 0
    trial: int | None = None  # the best trial's number
    lr: float | None = None
    batch_size: int | None = None
    complete: int = 0
    pruned: int = 0
    diverged: int = 0
    failed: int = 0
    finals: tuple[float, ...] = ()  # the final re-runs' values
    target_epoch: int | None = None  # median first epoch at the target (jobs with a target)
    target_reached: str | None = None  # "2/3" final runs reached it (jobs with a target)
    rank: int = 0
    p_raw: float | None = None  # Welch's p against the leader
    p_vs_leader: float | None = None  # Holm-adjusted
    tied_with_leader: bool | None = None

    @property
    def score(self) -> float | None:
        """What ranks it: the final mean, else the best trial."""
        return self.mean if self.mean is not None else self.best

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> LeaderboardRow:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in stored.items() if k in known}
        values["finals"] = tuple(v for v in stored.get("finals") or () if is_finite(v))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The stored row; a job without a target has no ``target_*`` keys."""
        out = asdict(self)
        out["finals"] = list(self.finals)
        if self.target_reached is None:
            del out["target_epoch"], out["target_reached"]
        return out


@dataclass(frozen=True)
class LrRangeCurve:
    """One optimizer's learning-rate range test (``tuner.engine.lr_range``)."""

    low: float
    searched_high: float
    lrs: tuple[float | None, ...] = ()
    losses: tuple[float | None, ...] = ()
    blowup_lr: float | None = None

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> LrRangeCurve | None:
        """The stored test, or ``None`` when it lacks its range."""
        low, high = _number(stored.get("low")), _number(stored.get("searched_high"))
        if low is None or high is None:
            return None
        return cls(low=low, searched_high=high,
                   lrs=tuple(_number(v) for v in stored.get("lrs") or ()),
                   losses=tuple(_number(v) for v in stored.get("losses") or ()),
                   blowup_lr=_number(stored.get("blowup_lr")))


@dataclass(frozen=True)
class LandscapeInfo:
    """What a two-parameter landscape task hands its figure (``Job.result["landscape"]``): the
    function's name (a ``tuner.analysis`` contour: ``rosenbrock`` or ``rastrigin``), its
    global minimum, the classic start point the seeds perturb, the window it is drawn in, and
    each seed's own start point where the task handed them."""

    function: str
    minimum: tuple[float, float]
    start: tuple[float, float]
    limit: float  # |x| and |y| are drawn up to this
    extra_y: float = 0.0  # more room above (Rosenbrock's valley bends up to y = x^2)
    starts: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # by seed

    def start_of(self, seed: int | None) -> tuple[float, float]:
        """Where the run with ``seed`` started: its own start when handed, else the classic
        one (the seeds' starts lie close to it)."""
        return self.starts.get(seed, self.start) if seed is not None else self.start

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> LandscapeInfo | None:
        minimum, start = _point(stored.get("minimum")), _point(stored.get("start"))
        limit = _number(stored.get("limit"))
        if not stored.get("function") or minimum is None or start is None or limit is None:
            return None
        starts = {int(seed): point for seed, p in (stored.get("starts") or {}).items()
                  if (point := _point(p)) is not None}
        return cls(function=str(stored["function"]), minimum=minimum, start=start, limit=limit,
                   extra_y=_number(stored.get("extra_y")) or 0.0, starts=starts)

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "minimum": list(self.minimum),
                "start": list(self.start), "limit": self.limit, "extra_y": self.extra_y,
                "starts": {str(seed): list(p) for seed, p in self.starts.items()}}


@dataclass(frozen=True)
class JobResult:
    """A finished job's stored result (``Job.result``): ``JobResult.from_dict(job.result)``.

    ``optimizers`` in the order they were stored; :attr:`ranked` in leaderboard order.
    """

    optimizers: Mapping[str, StoredOptimizer] = field(default_factory=dict)
    leaderboard: tuple[LeaderboardRow, ...] = ()
    export: Mapping[str, Any] = field(default_factory=dict)  # tuner.analysis.export's document
    seconds: float | None = None
    versions: Mapping[str, str] | None = None  # None: stored before versions were recorded
    problem: Mapping[str, Any] = field(default_factory=dict)  # task, sizes, data SHA-256
    lr_range: Mapping[str, LrRangeCurve] = field(default_factory=dict)
    landscape: LandscapeInfo | None = None
    export_path: str | None = None
    report_path: str | None = None
    report_files: tuple[str, ...] = ()

    @property
    def ranked(self) -> list[str]:
        """Optimizers in leaderboard order (best first), then any the leaderboard lacks."""
        board = [row.optimizer for row in self.leaderboard if row.optimizer in self.optimizers]
        return board + [name for name in self.optimizers if name not in board]

    @property
    def best(self) -> str | None:
        """The export's best optimizer (the leader with a configuration)."""
        best = self.export.get("best")
        return str(best) if best else None

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any] | None) -> JobResult:
        stored = stored or {}
        landscape = stored.get("landscape")
        return cls(
            optimizers={name: StoredOptimizer.from_dict(o)
                        for name, o in (stored.get("optimizers") or {}).items()},
            leaderboard=tuple(LeaderboardRow.from_dict(r) for r in stored.get("leaderboard")
                              or ()),
            export=dict(stored.get("export") or {}),
            seconds=_number(stored.get("seconds")),
            versions=stored.get("versions"),
            problem=dict(stored.get("problem") or {}),
            lr_range={name: curve for name, r in (stored.get("lr_range") or {}).items()
                      if (curve := LrRangeCurve.from_dict(r)) is not None},
            landscape=LandscapeInfo.from_dict(landscape) if landscape else None,
            export_path=stored.get("export_path"),
            report_path=stored.get("report_path"),
            report_files=tuple(stored.get("report_files") or ()),
        )
