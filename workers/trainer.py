"""Train one trial: build the optimizer and its schedule, then run epochs, one at a time.

Usage (what a worker actor does)::

    run = TrialRun(task, config, seed=3, device=torch.device("cpu"))
    for report in run.epochs(20):
        print(report.epoch, report.metrics)      # train_loss, val_loss, val_<metric>
        if report.diverged:
            break

The loop is flat and in named phases, per epoch: shuffle, then for each batch forward,
loss, divergence check, backward, step, zero_grad; then step the LR schedule, evaluate on
the whole validation set, report. A run is a generator, so the caller (the actor) may stop
between any two epochs: that is where the pruner acts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tuner.optim import build_optimizer
from tuner.task import Task

__all__ = ["EpochReport", "TrialRun", "seed_everything"]


@dataclass
class EpochReport:
    """What one epoch reports. ``metrics`` hold ``train_loss``, ``val_loss``, ``val_<name>``."""

    epoch: int  # 1-based: the number of epochs trained so far
    metrics: dict[str, float]
    seconds: float
    diverged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible trial."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrialRun:
    """One configuration of one optimizer on one task, trained epoch by epoch."""

    def __init__(
        self,
        task: Task,
        config: Mapping[str, Any],
        *,
        seed: int,
        device: torch.device,
    ) -> None:
        self.task = task
        self.device = device
        self.batch_size = int(config["batch_size"])
        self.model = task.model.to(device)
        self.optimizer, self.scheduler = build_optimizer(config, self.model.parameters())
        # Shuffling has its own generator, so the data order depends on the seed alone.
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._train_tensors = _tensors_on(task.train, device)
        self._val_tensors = _tensors_on(task.val, device)

    def epochs(self, n: int) -> Iterator[EpochReport]:
        """Train ``n`` more epochs, yielding a report after each; stops after a divergence."""
        for _ in range(n):
            report = self._train_one_epoch()
            yield report
            if report.diverged:
                return

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._train_tensors is not None:
            inputs, targets = self._train_tensors
            order = torch.randperm(len(inputs), generator=self.generator).to(self.device)
            for start in range(0, len(inputs), self.batch_size):
                index = order[start : start + self.batch_size]
                yield inputs[index], targets[index]
        else:
            loader = DataLoader(
                self.task.train, batch_size=self.batch_size, shuffle=True,
                generator=self.generator,
            )
            for inputs, targets in loader:
                yield inputs.to(self.device), targets.to(self.device)

    def _train_one_epoch(self) -> EpochReport:
        started = time.perf_counter()
        self.model.train()
        total, count = 0.0, 0
        for inputs, targets in self._batches():
            # forward
            loss = self.task.loss(self.model(inputs), targets)
            # divergence: stop at once. `.item()` is a CPU-GPU sync point, paid once a step.
            value = loss.item()
            if not math.isfinite(value):
                self.epoch += 1
                return EpochReport(
                    self.epoch, {"train_loss": value}, time.perf_counter() - started,
                    diverged=True,
                )
            # backward, step, zero_grad
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            total += value * len(targets)
            count += len(targets)
        # schedule: the LR decays once per epoch
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        metrics = {"train_loss": total / max(count, 1), **self.evaluate()}
        diverged = not all(math.isfinite(v) for v in metrics.values())
        extra = {}
        position = getattr(self.model, "position", None)
        if position is not None:
            extra["position"] = [float(v) for v in position]
        return EpochReport(
            self.epoch, metrics, time.perf_counter() - started, diverged=diverged, extra=extra
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``val_loss`` and ``val_<metric>`` on the whole validation set."""
        self.model.eval()
        if self._val_tensors is not None:
            inputs, targets = self._val_tensors
        else:
            inputs, targets = (t.to(self.device) for t in _collate(self.task.val))
        outputs = self.model(inputs)
        metrics = {"val_loss": float(self.task.loss(outputs, targets))}
        for name, metric in self.task.metrics.items():
            metrics[f"val_{name}"] = float(metric(outputs, targets))
        return metrics


def _tensors_on(
    dataset: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A TensorDataset's (inputs, targets) on the device: batched by indexing, no DataLoader."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, targets = dataset.tensors
        return inputs.to(device), targets.to(device)
    return None


def _collate(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(dataset, batch_size=len(dataset))
    inputs, targets = next(iter(loader))
    return inputs, targets
