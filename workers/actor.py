"""The long-lived Ray worker: one per resource slot, trials one after another.

Why not one Ray Tune trial per configuration: starting and stopping a trial costs Ray Tune
about 0.3 s (1.3 s without actor reuse) on a 2-core machine, while a 20-epoch MLP on the
digits trains in about 0.7 s. A worker that stays up keeps its process, its imports and its
data set, and costs one actor call per chunk of epochs (DESIGN.md, "Data flow").

The coordinator drives a worker with three calls::

    info = ray.get(worker.describe.remote())               # train size, metrics, node, device
    step = ray.get(worker.start.remote(key, config, seed=3, epochs=2))
    step = ray.get(worker.advance.remote(key, epochs=2))   # ... until step.finished

and may simply stop calling ``advance`` (the pruner stopped the trial); the next ``start``
replaces the trial.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import ray

__all__ = ["StepResult", "TrialWorker", "WorkerInfo"]


@dataclass
class WorkerInfo:
    node: str
    node_id: str
    pid: int
    device: str
    train_size: int
    val_size: int
    metrics: list[str]
    data_sha256: str | None = None  # the problem instance (REFERENCE.md protocol point 8)


@dataclass
class StepResult:
    """What one ``start`` or ``advance`` call trained."""

    key: str
    epochs: list[dict[str, Any]] = field(default_factory=list)  # EpochReport as dicts
    epochs_done: int = 0
    diverged: bool = False
    finished: bool = False  # reached the epoch budget, or diverged
    seconds: float = 0.0


class _Worker:
    """The plain class behind :data:`TrialWorker`, testable without Ray."""

    def __init__(self, task: str, *, num_threads: int = 1) -> None:
        import torch

        from tuner.task import resolve_task

        torch.set_num_threads(max(1, num_threads))
        self._factory = resolve_task(task)
        self._task_name = task
        self._device = _pick_device()
        self._run: Any = None
        self._key: str | None = None
        self._budget = 0

    def describe(self) -> WorkerInfo:
        """Build the task once (which also loads and caches its data) and say what it is."""
        from tuner.task import reported_metrics

        task = self._factory(0)
        context = ray.get_runtime_context() if ray.is_initialized() else None
        return WorkerInfo(
            node=socket.gethostname(),
            node_id=context.get_node_id() if context else "local",
            pid=os.getpid(),
            device=str(self._device),
            train_size=len(task.train),  # type: ignore[arg-type]
            val_size=len(task.val),  # type: ignore[arg-type]
            metrics=reported_metrics(task.metrics),
            data_sha256=_fingerprint(task),
        )

    def start(self, key: str, config: dict[str, Any], *, seed: int, epochs: int,
              budget: int) -> StepResult:
        """Begin a trial: build the task with the trial's seed, the optimizer from ``config``."""
        from workers.trainer import TrialRun, seed_everything

        seed_everything(seed)
        task = self._factory(seed)
        self._run = TrialRun(task, config, seed=seed, device=self._device)
        self._key, self._budget = key, budget
        return self.advance(key, epochs=epochs)

    def range_test(self, config: dict[str, Any], *, seed: int, low: float,
                   high: float) -> dict[str, Any]:
        """The learning-rate range test of one optimizer (:mod:`workers.range_test`)."""
        from workers.range_test import range_test
        from workers.trainer import seed_everything

        seed_everything(seed)
        found = range_test(self._factory(seed), config, seed=seed, device=self._device,
                           low=low, high=high)
        return found.to_dict()

    def advance(self, key: str, *, epochs: int) -> StepResult:
        """Train up to ``epochs`` more epochs of the current trial."""
        if key != self._key or self._run is None:
            raise RuntimeError(f"worker holds trial {self._key!r}, not {key!r}")
        started = time.perf_counter()
        result = StepResult(key=key)
        remaining = self._budget - self._run.epoch
        for report in self._run.epochs(min(epochs, remaining)):
            result.epochs.append(
                {"epoch": report.epoch, "metrics": report.metrics, "seconds": report.seconds,
                 **report.extra}
            )
            result.diverged = report.diverged
        result.epochs_done = self._run.epoch
        result.finished = result.diverged or self._run.epoch >= self._budget
        result.seconds = time.perf_counter() - started
        if result.finished:
            self._run, self._key = None, None
        return result

    def pid(self) -> int:
        return os.getpid()


def _fingerprint(task: Any) -> str | None:
    """SHA-256 of a task's training and validation tensors: the same digest means the same
    data and split. ``None`` for data that is not a ``TensorDataset``."""
    import hashlib

    from torch.utils.data import TensorDataset

    digest = hashlib.sha256()
    for dataset in (task.train, task.val):
        if not isinstance(dataset, TensorDataset):
            return None
        for tensor in dataset.tensors:
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _pick_device() -> Any:
    """The GPU Ray assigned to this actor (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    import torch

    if torch.cuda.is_available() and (not ray.is_initialized() or ray.get_gpu_ids()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


#: The Ray actor class; place it with ``TrialWorker.options(num_cpus=..., num_gpus=...)``.
TrialWorker = ray.remote(max_restarts=0, max_task_retries=0)(_Worker)
