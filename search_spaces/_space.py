"""A loaded search space and the optimizer configuration of one point in it."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_spaces._params import FULL, ParamSpec, _round
from tuner.errors import SearchSpaceError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

SCHEDULER_CLASS = "torch.optim.lr_scheduler.ExponentialLR"
"""The learning-rate schedule ``lr_decay`` drives: gamma = 1 - lr_decay, stepped once per epoch."""

SCHEDULES = ("exponential", "warmup_cosine", "constant")
"""The ``schedule`` parameter's values. ``exponential`` (the default): ``lr_decay`` per epoch;
``warmup_cosine``: linear warm-up over a ``warmup`` fraction of the steps, then cosine decay to
zero, stepped per batch (AlgoPerf's baselines, the tuning playbook); ``constant``: no schedule."""

DEFAULT_WARMUP = 0.05
"""The warm-up fraction when ``warmup`` is not searched: AlgoPerf's NAdamW baseline uses 5%."""

IMPLICIT_PARAMS = {
    "schedule": ParamSpec("schedule", "categorical", choices=("exponential",)),
    # AlgoPerf searches the warm-up fraction over about 2-10% of the steps.
    "warmup": ParamSpec("warmup", "float", low=0.02, high=0.1),
}
"""Parameters every space takes without declaring them: an override (``schedule: {choices:
[exponential, warmup_cosine]}``, ``warmup: {low: 0.02, high: 0.1}``) starts from these. A space
that declares neither keeps the exponential schedule, its distributions and its numbers."""

# Parameters that are not torch.optim keyword arguments of the same name.
NON_KWARGS = frozenset({"batch_size", "lr_decay", "beta1", "beta2", "schedule", "warmup"})

# Where torch's default is not the conventional starting point (torch's SGD momentum is 0).
_CONVENTIONAL = {  # momentum 0.9: REFERENCE small budget
    "momentum": 0.9, "lr_decay": 0.0, "schedule": "exponential", "warmup": DEFAULT_WARMUP,
}
_LR_SCHEDULER = "torch.optim.lr_scheduler"


def schedule_config(
    schedule: str,
    *,
    lr_decay: float = 0.0,
    warmup: float = DEFAULT_WARMUP,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
) -> dict[str, Any] | None:
    """The ``torch.optim.lr_scheduler`` of a schedule, as data (``{class, kwargs, step}``).

    ``step`` says when to call ``scheduler.step()``: ``epoch`` (once per epoch) or ``batch``
    (after every optimizer step). ``warmup_cosine`` steps per batch when ``steps_per_epoch`` is
    known (a ``Task``: ``ceil(train_size / batch_size)``), else per epoch (a training loop):
    a ``LinearLR`` warm-up from ``1 / (W + 1)`` of the rate to all of it over ``W = round(warmup
    * steps)`` steps, then ``CosineAnnealingLR`` to zero over the rest, chained by
    ``SequentialLR``. None means a constant rate.

    Raises:
        ValueError: an unknown schedule, or ``warmup_cosine`` without ``epochs``.
    """
    if schedule == "constant":
        return None
    if schedule == "exponential":
        if lr_decay <= 0:
            return None
        return {"class": SCHEDULER_CLASS, "kwargs": {"gamma": 1.0 - lr_decay}, "step": "epoch"}
    if schedule != "warmup_cosine":
        allowed = ", ".join(SCHEDULES)
        raise ValueError(f"schedule: unknown schedule {schedule!r}; allowed: {allowed}")
    if not epochs:
        raise ValueError("schedule: warmup_cosine needs the job's epochs (the number of steps)")
    per_batch = bool(steps_per_epoch)
    steps = epochs * (steps_per_epoch or 1)
    warm = min(round(warmup * steps), steps - 1)
    cosine = {"class": f"{_LR_SCHEDULER}.CosineAnnealingLR",
              "kwargs": {"T_max": steps - warm, "eta_min": 0.0}}
    step = "batch" if per_batch else "epoch"
    if warm < 1:
        return {**cosine, "step": step}
    linear = {"class": f"{_LR_SCHEDULER}.LinearLR",
              "kwargs": {"start_factor": 1.0 / (warm + 1), "end_factor": 1.0, "total_iters": warm}}
    return {
        "class": f"{_LR_SCHEDULER}.SequentialLR",
        "kwargs": {"schedulers": [linear, cosine], "milestones": [warm]},
        "step": step,
    }


@dataclass(frozen=True)
class OptimizerConfig:
    """Everything needed to build the optimizer (and schedule) of one trial.

    Example:
        >>> import torch
        >>> cfg = space.optimizer_config(trial.params, train_size=1437)  # doctest: +SKIP
        >>> opt = getattr(torch.optim, cfg.optimizer.rsplit(".", 1)[1])(
        ...     model.parameters(), **cfg.kwargs)  # doctest: +SKIP

    Attributes:
        optimizer: Full dotted class name, e.g. ``"torch.optim.Adam"``.
        kwargs: Keyword arguments of the class: plain floats/ints/bools, ``betas`` as a list.
        batch_size: The mini-batch size (``full`` already resolved to the training-set size).
        scheduler: ``{"class": ..., "kwargs": {...}, "step": "epoch" | "batch"}`` (see
            :func:`schedule_config`), or None for a constant rate.
    """

    optimizer: str
    kwargs: dict[str, Any]
    batch_size: int
    scheduler: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"class", "kwargs", "batch_size", "scheduler"}``, YAML/JSON friendly."""
        return {
            "class": self.optimizer,
            "kwargs": dict(self.kwargs),
            "batch_size": self.batch_size,
            "scheduler": None if self.scheduler is None else dict(self.scheduler),
        }


def _plain(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    # numpy scalars and the like
    if hasattr(v, "item"):
        return v.item()
    return v


@dataclass(frozen=True)
class SearchSpace:
    """The search space of one optimizer, read from ``search_spaces/<name>.yaml``.

    Example:
        >>> import optuna, search_spaces
        >>> space = search_spaces.load("adam", {"beta1": {"low": 0.8, "high": 0.99}})
        >>> trial = optuna.create_study().ask(space.distributions())  # doctest: +SKIP
        >>> space.hyperparameters(trial.params, train_size=1437)  # doctest: +SKIP
        {'lr': 0.0012, 'batch_size': 64, 'weight_decay': 0.0, 'beta1': 0.93, ...}

    Attributes:
        name: The space's name (the file stem for shipped spaces).
        description: One line, shown by ``tuner spaces``.
        torch_class: The ``torch.optim`` class name, e.g. ``"Adam"``.
        path: The file it was read from.
        fixed: ``torch.optim`` keyword arguments fixed for this optimizer (``nesterov: true``).
        params: The parameters by shared name, overrides applied.
    """

    name: str
    description: str
    torch_class: str
    path: Path
    fixed: dict[str, Any] = field(default_factory=dict)
    params: dict[str, ParamSpec] = field(default_factory=dict)

    @property
    def optimizer(self) -> str:
        """Full dotted class name, e.g. ``"torch.optim.Adam"``."""
        return f"torch.optim.{self.torch_class}"

    def distributions(self) -> dict[str, BaseDistribution]:
        """The Optuna distributions to sample, keyed by Optuna parameter name.

        ``one_minus`` parameters appear as ``one_minus_<name>`` (a log-uniform distribution over
        q = 1 - value). Parameters with a single choice are constants and do not appear.
        """
        return {p.optuna_name: p.distribution() for p in self.params.values() if not p.is_constant}

    def constants(self) -> dict[str, Any]:
        """Parameters fixed to a single choice (by the file or by an override), by name."""
        return {n: p.choices[0] for n, p in self.params.items() if p.is_constant}  # type: ignore[index]

    def hyperparameters(
        self, optuna_params: Mapping[str, Any], *, train_size: int
    ) -> dict[str, Any]:
        """User-facing values by shared name: what is logged to MLflow as the trial's params.

        ``one_minus`` values are converted back (``beta1 = 1 - one_minus_beta1``), ``batch_size``
        ``full`` becomes ``train_size``, and constants are included. Keys of ``optuna_params``
        that are not parameters of this space are ignored.

        Raises:
            SearchSpaceError: A sampled parameter is missing from ``optuna_params``.
        """
        missing = [
            p.optuna_name
            for p in self.params.values()
            if not p.is_constant and p.optuna_name not in optuna_params
        ]
        if missing:
            raise SearchSpaceError(
                f"{self.name}: no value for Optuna parameter(s) {', '.join(missing)}; "
                f"expected: {', '.join(self.distributions())}"
            )
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            raw = p.choices[0] if p.is_constant else optuna_params[p.optuna_name]  # type: ignore[index]
            value = p.value(raw)
            if name == "batch_size" and value == FULL:
                value = int(train_size)
            out[name] = _plain(value)
        return out

    def optimizer_config(
        self, optuna_params: Mapping[str, Any], *, train_size: int, epochs: int | None = None
    ) -> OptimizerConfig:
        """The optimizer, its keyword arguments, batch size and schedule for one sampled point.

        ``optuna_params`` is keyed like :meth:`distributions` (e.g. ``trial.params``).
        ``epochs`` (the job's budget) sizes a per-step schedule (``warmup_cosine``), with
        ``ceil(train_size / batch_size)`` steps per epoch; a ``train_size`` of 0 (unknown: a
        training loop) makes it step per epoch.
        """
        hp = self.hyperparameters(optuna_params, train_size=train_size)
        kwargs: dict[str, Any] = {k: _plain(v) for k, v in self.fixed.items()}
        for name, value in hp.items():
            if name not in NON_KWARGS:
                kwargs[name] = value
        if "beta1" in hp:
            kwargs["betas"] = [float(hp["beta1"]), float(hp["beta2"])]
        batch_size = int(hp["batch_size"])
        steps_per_epoch = math.ceil(train_size / batch_size) if train_size and batch_size else None
        scheduler = schedule_config(
            str(hp.get("schedule", "exponential")), lr_decay=float(hp.get("lr_decay", 0.0)),
            warmup=float(hp.get("warmup", DEFAULT_WARMUP)), epochs=epochs,
            steps_per_epoch=steps_per_epoch,
        )
        return OptimizerConfig(self.optimizer, kwargs, batch_size, scheduler)

    def defaults(self, *, train_size: int) -> dict[str, Any]:
        """A starting point keyed like :meth:`distributions`: the library defaults where possible.

        Each parameter takes torch's default for this class (momentum 0.9, no LR decay), moved
        to the nearest point of its range when outside it; ``batch_size`` takes its middle
        choice. Useful to enqueue a first trial (Crowded Valley: defaults are often competitive).
        ``train_size`` is accepted for symmetry with :meth:`hyperparameters`.
        """
        del train_size  # the point is in Optuna space, where "full" stays "full"
        torch_defaults = self._torch_defaults()
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if p.is_constant:
                continue
            target = _CONVENTIONAL.get(name, torch_defaults.get(name))
            out[p.optuna_name] = _nearest(p, target)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The space in file form (overrides applied), e.g. to store with a study's results."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "class": self.torch_class,
        }
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        out["params"] = {n: p.to_dict() for n, p in self.params.items()}
        return out

    def _torch_defaults(self) -> dict[str, Any]:
        import torch

        cls = getattr(torch.optim, self.torch_class)
        found: dict[str, Any] = {}
        for name, prm in inspect.signature(cls.__init__).parameters.items():
            if prm.default is not inspect.Parameter.empty:
                found[name] = prm.default
        betas = found.pop("betas", None)
        if isinstance(betas, tuple | list) and len(betas) == 2:
            found["beta1"], found["beta2"] = betas
        found.pop("lr_decay", None)  # Adagrad's own lr_decay; ours is the schedule's
        found.update({k: v for k, v in self.fixed.items() if k not in found})
        return found


def _nearest(p: ParamSpec, target: Any) -> Any:
    """The point of ``p``'s distribution closest to the value ``target`` (Optuna space)."""
    if p.kind == "categorical":
        choices = list(p.choices or ())
        if target in choices:
            return choices[choices.index(target)]  # the choice itself: 0.0, not torch's 0
        if p.name == "batch_size" or not isinstance(target, int | float):
            return choices[len(choices) // 2]
        numeric = [c for c in choices if isinstance(c, int | float) and not isinstance(c, bool)]
        if not numeric:
            return choices[0]
        return min(numeric, key=lambda c: abs(c - target))
    if p.low is None or p.high is None:
        raise ValueError(f"{p.name}: a {p.kind} parameter needs low and high")
    low, high = p.low, p.high
    if isinstance(target, bool) or not isinstance(target, int | float):
        center = math.sqrt(low * high) if p.log else (low + high) / 2
        return round(center) if p.kind == "int" else center
    t = _round(1.0 - target) if p.one_minus else target
    t = min(max(t, low), high)
    return int(round(t)) if p.kind == "int" else float(t)
