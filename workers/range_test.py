"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", §3.3).

One short pass over the task in which the learning rate grows exponentially from ``low`` to
``high``, one batch per step, recording the loss smoothed by an exponential moving average
(with bias correction, as fastai's ``lr_find`` and Lightning's ``LearningRateFinder`` do).
The pass stops when the smoothed loss exceeds ``blowup`` times its minimum or becomes NaN or
inf: the rate there bounds the rates worth searching.

Usage (what a worker actor does)::

    found = range_test(task, config, seed=0, device=torch.device("cpu"), low=1e-5, high=100)
    found.blowup_lr        # None when the loss never blew up inside [low, high]
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from tuner.optim import build_optimizer
from tuner.task import Task

__all__ = ["RangeTest", "range_test"]

#: Steps of the pass (fastai and Lightning default to 100).
STEPS = 100
#: The loss has blown up once its smoothed value exceeds this multiple of its minimum
#: (fastai's ``lr_find`` stops at 4x).
BLOWUP = 4.0
#: Weight of the moving average of the loss (fastai: 0.98).
BETA = 0.98


@dataclass
class RangeTest:
    """What one range test found: the rates tried, the smoothed losses, where it blew up."""

    low: float
    high: float
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed; NaN after a blow-up
    blowup_lr: float | None = None  # the first rate at which the loss blew up
    min_loss_lr: float | None = None  # the rate at the smallest smoothed loss
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def range_test(task: Task, config: Mapping[str, Any], *, seed: int, device: torch.device,
               low: float, high: float, steps: int = STEPS,
               blowup: float = BLOWUP) -> RangeTest:
    """Run the test on ``task`` with the optimizer of ``config`` (its ``lr`` is overridden).

    The schedule of ``config`` is not used: the pass sets the rate itself at every step.
    """
    if not 0 < low < high:
        raise ValueError(f"`0 < low < high` must hold, but got ({low=}, {high=}).")
    started = time.perf_counter()
    model = task.model.to(device)
    model.train()
    optimizer, _ = build_optimizer(config, model.parameters())
    generator = torch.Generator().manual_seed(seed)
    batches = _batches(task, int(config["batch_size"]), generator, device)
    found = RangeTest(low=low, high=high)
    ratio = math.log(high / low)
    average, best = 0.0, math.inf
    for step in range(steps):
        lr = low * math.exp(ratio * step / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = next(batches)
        loss = task.loss(model(inputs), targets)
        value = loss.item()  # a CPU-GPU sync point, once a step
        found.lrs.append(lr)
        if not math.isfinite(value):
            found.losses.append(math.nan)
            found.blowup_lr = lr
            break
        average = BETA * average + (1 - BETA) * value
        smoothed = average / (1 - BETA ** (step + 1))
        found.losses.append(smoothed)
        if smoothed < best:
            best, found.min_loss_lr = smoothed, lr
        if step > 0 and smoothed > blowup * best:
            found.blowup_lr = lr
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    found.seconds = time.perf_counter() - started
    return found


def _batches(task: Task, batch_size: int, generator: torch.Generator,
             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches, epoch after epoch, for as long as the test asks."""
    dataset = task.train
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, targets = (t.to(device) for t in dataset.tensors)
        while True:
            order = torch.randperm(len(inputs), generator=generator).to(device)
            for start in range(0, len(inputs), batch_size):
                index = order[start : start + batch_size]
                yield inputs[index], targets[index]
    while True:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
        for inputs, targets in loader:
            yield inputs.to(device), targets.to(device)
