"""Train one trial of a ``Task``: build the optimizer and its schedule, then run epochs.

Usage (what a worker actor does)::

    run = TrialRun(task, config, seed=3, device=torch.device("cpu"), amp="bf16")
    for report in run.epochs(20):
        print(report.epoch, report.metrics)      # train_loss, val_loss, val_<metric>
        if report.diverged:
            break

The loop is flat and in named phases, per epoch: shuffle, then for each batch forward (under
autocast with ``amp``), loss, divergence check, backward, clip, step, zero_grad, and a
per-batch schedule step; then a per-epoch schedule step, validation in batches, report. A run
is a generator, so the caller (the actor) may stop between any two epochs: that is where the
pruner acts.

Defaults, and why:
- ``val_batch_size=1024``: small validation sets stay one batch (the numbers of the built-in
  tasks do not move); a real one no longer goes through the model in one piece.
- ``num_workers=0``: tensor data is batched by indexing, in-process (no DataLoader at all);
  workers help only datasets that decode or augment in ``__getitem__``.
- ``pin_memory=None``: on when training on CUDA (faster host-to-device copies), else off.
- ``amp="off"``: full precision. ``bf16`` autocasts on CPU and GPU alike; ``fp16`` is CUDA
  only and scales the loss (``torch.amp.GradScaler``) so small gradients do not underflow.
- ``grad_clip=None``: no clipping; a number clips the global gradient norm before each step.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tuner.optim import build_optimizer, scheduler_step
from tuner.task import Task

__all__ = ["AMP_DTYPES", "EpochReport", "TrialRun", "seed_everything"]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    """One configuration of one optimizer on one task, trained epoch by epoch.

    Args:
        task: What is trained.
        config: The optimizer config (``{"class", "kwargs", "batch_size", "scheduler"}``).
        seed: Sets the data order (the caller seeds the model through the task's factory).
        device: Where to train.
        val_batch_size, num_workers, pin_memory, amp, grad_clip: the job's ``trainer:``
            options (see the module docstring).

    Raises:
        ValueError: ``amp="fp16"`` on a device that is not CUDA, or an unknown ``amp``.
    """

    def __init__(
        self,
        task: Task,
        config: Mapping[str, Any],
        *,
        seed: int,
        device: torch.device,
        val_batch_size: int = 1024,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        amp: str = "off",
        grad_clip: float | None = None,
    ) -> None:
        if amp not in ("off", *AMP_DTYPES):
            raise ValueError(f"trainer.amp: got {amp!r}; allowed: off, bf16, fp16")
        if amp == "fp16" and device.type != "cuda":
            raise ValueError(
                f"trainer.amp: fp16 needs a CUDA device, this trial trains on {device}; "
                "use bf16 on CPU"
            )
        self.task = task
        self.device = device
        self.batch_size = int(config["batch_size"])
        self.model = task.model.to(device)
        self.optimizer, self.scheduler = build_optimizer(config, self.model.parameters())
        self.step_per_batch = self.scheduler is not None and scheduler_step(config) == "batch"
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = device.type == "cuda" if pin_memory is None else pin_memory
        self.amp = amp
        self.grad_clip = grad_clip
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
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

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def _loader(self, dataset: Any, *, batch_size: int, shuffle: bool) -> DataLoader[Any]:
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle,
            generator=self.generator if shuffle else None,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._train_tensors is not None:
            inputs, targets = self._train_tensors
            order = torch.randperm(len(inputs), generator=self.generator).to(self.device)
            for start in range(0, len(inputs), self.batch_size):
                index = order[start : start + self.batch_size]
                yield inputs[index], targets[index]
        else:
            loader = self._loader(self.task.train, batch_size=self.batch_size, shuffle=True)
            for inputs, targets in loader:
                yield (inputs.to(self.device, non_blocking=self.pin_memory),
                       targets.to(self.device, non_blocking=self.pin_memory))

    def _train_one_epoch(self) -> EpochReport:
        started = time.perf_counter()
        self.model.train()
        total, count = 0.0, 0
        for inputs, targets in self._batches():
            # forward (autocast: matmuls and convolutions in bf16/fp16, reductions in fp32)
            with self._autocast():
                loss = self.task.loss(self.model(inputs), targets)
            # divergence: stop at once. `.item()` is a CPU-GPU sync point, paid once a step.
            value = loss.item()
            if not math.isfinite(value):
                self.epoch += 1
                return EpochReport(
                    self.epoch, {"train_loss": value}, time.perf_counter() - started,
                    diverged=True,
                )
            # backward, clip, step, zero_grad (the scaler is a no-op unless amp is fp16)
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            # schedule, per batch (warm-up + cosine)
            if self.step_per_batch:
                self.scheduler.step()  # type: ignore[union-attr]
            total += value * len(targets)
            count += len(targets)
        # schedule, per epoch (the exponential decay)
        if self.scheduler is not None and not self.step_per_batch:
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
        """``val_loss`` and ``val_<metric>`` on the validation set, in ``val_batch_size``
        batches; each value is the mean over the batches weighted by their sizes (one batch:
        the value on the whole set)."""
        self.model.eval()
        sums: dict[str, float] = {}
        count = 0
        for inputs, targets in self._val_batches():
            with self._autocast():
                outputs = self.model(inputs)
                loss = self.task.loss(outputs, targets)
            if self.amp != "off":  # metrics see float32, as without amp
                outputs = outputs.float() if torch.is_floating_point(outputs) else outputs
            values = {"val_loss": float(loss)}
            for name, metric in self.task.metrics.items():
                values[f"val_{name}"] = float(metric(outputs, targets))
            n = len(targets)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value * n
            count += n
        return {name: total / max(count, 1) for name, total in sums.items()}

    def _val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._val_tensors is not None:
            inputs, targets = self._val_tensors
            if len(inputs) <= self.val_batch_size:
                yield inputs, targets  # the whole set: no copies
                return
            for start in range(0, len(inputs), self.val_batch_size):
                yield (inputs[start : start + self.val_batch_size],
                       targets[start : start + self.val_batch_size])
        else:
            loader = self._loader(self.task.val, batch_size=self.val_batch_size, shuffle=False)
            for inputs, targets in loader:
                yield (inputs.to(self.device, non_blocking=self.pin_memory),
                       targets.to(self.device, non_blocking=self.pin_memory))


def _tensors_on(
    dataset: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A TensorDataset's (inputs, targets) on the device: batched by indexing, no DataLoader."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, targets = dataset.tensors
        return inputs.to(device), targets.to(device)
    return None
