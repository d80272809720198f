"""What tuner hands a user's own training loop: :class:`Trial`.

A training loop is a function ``train(trial)`` marked by :func:`tuner.training_loop`. A worker
calls it once per trial (and once per final re-run) in a thread of its own; each
``trial.report(epoch, **metrics)`` hands that epoch to the coordinator (MLflow, the pruner)
and returns when the coordinator wants the next epoch. ``report`` raises
:class:`tuner.TrialPruned` when the trial stops there: the pruner stopped it, the job ended,
or the reported loss is NaN or inf (the trial is then DIVERGED).

A trial made without a worker (``Trial(config)``) runs a loop in your own process, to try it
out: ``report`` records into :attr:`Trial.reports` and checks divergence, and nothing blocks.

Example::

    import tuner

    @tuner.training_loop
    def train(trial: tuner.Trial) -> None:
        torch.manual_seed(trial.seed)
        model = Net().to(trial.device)
        optimizer, scheduler = trial.build_optimizer(model.parameters())
        for epoch in range(trial.epochs):
            ...
            if scheduler is not None:
                scheduler.step()                       # once per epoch in a training loop
            trial.report(epoch + 1, val_loss=vl, val_accuracy=acc)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from tuner.errors import TaskError, TrialPruned

if TYPE_CHECKING:
    import torch

__all__ = ["Trial", "TrialDiverged"]


class TrialDiverged(TrialPruned):
    """Raised by ``report`` when a reported loss is NaN or inf: the trial is DIVERGED."""


class _Session(Protocol):
    """The worker's side of a trial (workers.actor): takes each epoch, may block or raise."""

    def on_report(self, record: dict[str, Any]) -> None: ...


class Trial:
    """One trial (or one final re-run) of a training loop.

    Attributes:
        seed: The seed of this trial or final re-run; seed torch, NumPy and your environment
            with it (tuner seeds Python, NumPy and torch with it before calling the loop).
        device: The GPU Ray assigned to the worker, else the CPU (a ``torch.device``).
        epochs: The job's epoch budget: report at most this many epochs.
        hyperparameters: Every searched or fixed value of this trial by shared name (``lr``,
            ``batch_size``, ``weight_decay``, ``beta1``, ...), as MLflow shows them.
        config: The optimizer config :meth:`build_optimizer` builds (``class``, ``kwargs``,
            ``batch_size``, ``scheduler``).
        reports: The epochs reported so far, ``{"epoch", "metrics", "seconds"}`` each.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        seed: int = 0,
        device: Any = "cpu",
        epochs: int = 1,
        hyperparameters: Mapping[str, Any] | None = None,
        metric: str | None = None,
        name: str = "train",
        session: _Session | None = None,
    ) -> None:
        self.config = dict(config)
        self.seed = seed
        self.device = _device(device)
        self.epochs = epochs
        self.hyperparameters = dict(hyperparameters or {"batch_size": config.get("batch_size")})
        self.reports: list[dict[str, Any]] = []
        self._metric = metric
        self._name = name
        self._session = session
        self._last = time.perf_counter()

    @property
    def batch_size(self) -> int:
        """The trial's batch size (``hyperparameters["batch_size"]``)."""
        return int(self.config["batch_size"])

    def build_optimizer(
        self, params: Any, *, steps_per_epoch: int | None = None
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """The trial's optimizer over ``params``, and its LR scheduler (None: constant rate).

        Call it once per model (two models, same settings: call it twice). Step the scheduler
        once per epoch; or pass ``steps_per_epoch`` (your batches per epoch) and step it after
        every ``optimizer.step()``: a warm-up + cosine schedule then spans your steps exactly.
        An exponential decay always steps per epoch.
        """
        from search_spaces import schedule_config
        from search_spaces._space import DEFAULT_WARMUP
        from tuner.optim import build_optimizer

        config = self.config
        if steps_per_epoch is not None and self.hyperparameters.get("schedule") == "warmup_cosine":
            if isinstance(steps_per_epoch, bool) or steps_per_epoch < 1:
                raise ValueError(f"steps_per_epoch must be >= 1, but got {steps_per_epoch!r}")
            scheduler = schedule_config(
                "warmup_cosine", warmup=float(self.hyperparameters.get("warmup", DEFAULT_WARMUP)),
                epochs=self.epochs, steps_per_epoch=steps_per_epoch,
            )
            config = {**config, "scheduler": scheduler}
        return build_optimizer(config, params)

    def report(self, epoch: int, **metrics: Any) -> None:
        """Report one epoch's metrics (floats, or one-element tensors).

        Feeds MLflow and the pruner. Returns when the coordinator wants the next epoch.

        Raises:
            tuner.TrialPruned: the trial stops here (pruned, the job ended, or the budget of
                ``epochs`` reports is spent); let it propagate.
            TrialDiverged: a reported loss (any name ending in ``loss``, or the job's
                metric) is NaN or inf; the trial is DIVERGED.
            ValueError: no metrics, a value that is not a number, or an epoch that does not
                follow the last one.
            tuner.TaskError: the first report lacks the job's ``metric``.
        """
        if not metrics:
            raise ValueError("trial.report: give at least one metric, e.g. val_loss=0.25")
        last = self.reports[-1]["epoch"] if self.reports else 0
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= last:
            raise ValueError(
                f"trial.report: epoch must be an integer above the last one ({last}), counting "
                f"from 1, but got {epoch!r}"
            )
        values: dict[str, float] = {}
        for key, value in metrics.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"trial.report: {key} must be a number, but got {value!r}"
                ) from None
        if self._metric and not self.reports and self._metric not in values:
            raise TaskError(
                f"metric: training loop {self._name!r} does not report {self._metric!r}; it "
                f"reports {', '.join(values)}"
            )
        now = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "metrics": values,
                                  "seconds": now - self._last}
        bad = sorted(key for key, value in values.items()
                     if (key.endswith("loss") or key == self._metric) and not math.isfinite(value))
        record["diverged"] = bool(bad)
        self.reports.append(record)
        if self._session is not None:
            self._session.on_report(record)  # may block for the next epoch, or raise
        self._last = time.perf_counter()
        if bad:
            raise TrialDiverged(f"{', '.join(bad)} is {values[bad[0]]}: the trial diverged")


def _device(device: Any) -> Any:
    if isinstance(device, str):
        import torch

        return torch.device(device)
    return device
