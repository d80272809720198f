"""The long-lived Ray worker: one per resource slot, trials one after another.

Why not one Ray Tune trial per configuration: starting and stopping a trial costs Ray Tune
about 0.3 s (1.3 s without actor reuse) on a 2-core machine, while a 20-epoch MLP on the
digits trains in about 0.7 s. A worker that stays up keeps its process, its imports and its
data set, and costs one actor call per chunk of epochs (docs/design.md, "Data flow").

The coordinator drives a worker with three calls::

    info = ray.get(worker.describe.remote())               # train size, metrics, node, device
    step = ray.get(worker.start.remote(key, config, seed=3, epochs=2))
    step = ray.get(worker.advance.remote(key, epochs=2))   # ... until step.finished

and may simply stop calling ``advance`` (the pruner stopped the trial); the next ``start``
(or ``stop(key)``) replaces the trial.

A task that is a user's training loop (``@tuner.training_loop def train(trial)``) runs in a
thread of the worker, with the same three calls: ``trial.report(epoch, ...)`` hands each epoch
to the chunk ``advance`` is collecting and blocks once the chunk has its epochs, until the next
``advance``; when the coordinator moves on instead, the blocked ``report`` raises
``tuner.TrialPruned`` and the thread unwinds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from tuner.errors import TaskError, TrialPruned
from tuner.task import is_training_loop, reported_metrics, resolve_task
from tuner.trial import Trial, TrialDiverged

logger = logging.getLogger(__name__)

#: How long a stopped training loop may take to unwind before the worker moves on without it.
STOP_GRACE_S = 30.0

__all__ = ["StepResult", "TrialWorker", "WorkerInfo"]


@dataclass
class WorkerInfo:
    node: str
    node_id: str
    pid: int
    device: str
    train_size: int | None  # None for a training loop: its data is its own business
    val_size: int | None
    metrics: list[str] | None  # None for a training loop: known when it first reports
    data_sha256: str | None = None  # the problem instance (docs/reference.md protocol point 8)


@dataclass
class StepResult:
    """What one ``start`` or ``advance`` call trained."""

    key: str
    epochs: list[dict[str, Any]] = field(default_factory=list)  # EpochReport as dicts
    epochs_done: int = 0
    diverged: bool = False
    finished: bool = False  # reached the epoch budget, or diverged, or failed
    seconds: float = 0.0
    error: str | None = None  # a training loop raised: "Type: message" (the trial FAILs)


class _Worker:
    """The plain class behind :data:`TrialWorker`, testable without Ray."""

    def __init__(
        self,
        task: str,
        *,
        num_threads: int = 1,
        trainer: dict[str, Any] | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, num_threads))
        # A factory seed -> Task, or a training loop train(trial) (self._is_loop).
        self._factory: Any = resolve_task(task)
        self._is_loop = is_training_loop(self._factory)
        self._task_name = task
        self._trainer = dict(trainer or {})
        self._device = _pick_device()
        self._run: Any = None
        self._key: str | None = None
        self._budget = 0

    def describe(self) -> WorkerInfo:
        """Build the task once (which also loads and caches its data) and say what it is."""
        context = ray.get_runtime_context() if ray.is_initialized() else None
        if self._is_loop:
            return WorkerInfo(
                node=socket.gethostname(),
                node_id=context.get_node_id() if context else "local",
                pid=os.getpid(), device=str(self._device),
                train_size=None, val_size=None, metrics=None, data_sha256=None,
            )
        task = self._factory(0)
        return WorkerInfo(
            node=socket.gethostname(),
            node_id=context.get_node_id() if context else "local",
            pid=os.getpid(),
            device=str(self._device),
            train_size=len(task.train),
            val_size=len(task.val),
            metrics=reported_metrics(task.metrics),
            data_sha256=_fingerprint(task),
        )

    def start(self, key: str, config: dict[str, Any], *, seed: int, epochs: int,
              budget: int, metric: str | None = None) -> StepResult:
        """Begin a trial: build the task with the trial's seed, the optimizer from ``config``;
        or start the training loop's thread. A trial still held is stopped first.

        ``config["hyperparameters"]`` is what a loop's ``trial.hyperparameters`` shows;
        ``metric`` (the job's) must be in a loop's first report (else a ``TaskError``). They
        come with each trial, not with the worker: warm workers serve the next job too.
        """
        from workers.trainer import TrialRun, seed_everything

        self.stop(self._key)
        if self._is_loop:
            self._run = _LoopRun(
                self._factory, config, seed=seed, device=self._device, budget=budget,
                metric=metric, name=self._task_name,
            )
            self._key, self._budget = key, budget
            return self.advance(key, epochs=epochs)
        seed_everything(seed)
        task = self._factory(seed)
        self._run = TrialRun(task, config, seed=seed, device=self._device, **self._trainer)
        self._key, self._budget = key, budget
        return self.advance(key, epochs=epochs)

    def range_test(self, config: dict[str, Any], *, seed: int, low: float,
                   high: float) -> dict[str, Any]:
        """The learning-rate range test of one optimizer (:mod:`workers.range_test`)."""
        from workers.range_test import range_test
        from workers.trainer import seed_everything

        if self._is_loop:
            raise TaskError(
                f"lr_range_test: task {self._task_name!r} is a training loop; the range test "
                "trains a Task (a model, data and a loss) and cannot drive a loop"
            )
        seed_everything(seed)
        found = range_test(self._factory(seed), config, seed=seed, device=self._device,
                           low=low, high=high)
        return found.to_dict()

    def stop(self, key: str | None) -> None:
        """End the trial ``key`` if this worker still holds it (a training loop's blocked
        ``report`` raises ``tuner.TrialPruned``, and the thread is waited for)."""
        if key is None or key != self._key:
            return
        if isinstance(self._run, _LoopRun):
            self._run.stop()
        self._run, self._key = None, None

    def advance(self, key: str, *, epochs: int) -> StepResult:
        """Train up to ``epochs`` more epochs of the current trial."""
        if key != self._key or self._run is None:
            raise RuntimeError(f"worker holds trial {self._key!r}, not {key!r}")
        if isinstance(self._run, _LoopRun):
            result = self._run.advance(key, epochs)
            if result.finished:
                self._run, self._key = None, None
            return result
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


class _LoopRun:
    """One trial of a training loop: the loop's thread and the hand-over of its epochs.

    ``advance`` (the actor's thread) asks for n epochs and waits; ``on_report`` (the loop's
    thread, inside ``trial.report``) adds an epoch and, once the chunk has its n epochs,
    waits for the next ``advance``, or raises ``TrialPruned`` when the trial is stopped.
    """

    def __init__(self, loop: Any, config: dict[str, Any], *, seed: int, device: Any,
                 budget: int, metric: str | None, name: str) -> None:
        self._cond = threading.Condition()
        self._requested = 0  # epochs asked for by every advance so far (at most the budget)
        self._pending: list[dict[str, Any]] = []  # reported, not yet handed to the coordinator
        self._done = False  # the loop's thread has ended
        self._stopped = False
        self._diverged = False
        self._error: str | None = None
        self._task_error: TaskError | None = None
        self.epoch = 0  # epochs reported
        self.budget = budget
        self.trial = Trial(
            config, seed=seed, device=device, epochs=budget,
            hyperparameters=config.get("hyperparameters"), metric=metric, name=name,
            session=self,
        )
        self._thread = threading.Thread(
            target=self._main, args=(loop,), name=f"tuner-loop-seed-{seed}", daemon=True
        )
        self._thread.start()

    def _main(self, loop: Any) -> None:
        from workers.trainer import seed_everything

        try:
            seed_everything(self.trial.seed)
            loop(self.trial)  # returning (early or not) = finished
        except TrialDiverged:
            pass
        except TrialPruned:
            pass  # stopped by us, or the loop's own early stop: either way it ends here
        except TaskError as e:
            self._task_error = e
        except BaseException as e:  # noqa: BLE001 - the trial FAILs with the loop's error
            self._error = f"{type(e).__name__}: {e}"
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def on_report(self, record: dict[str, Any]) -> None:
        """Called by ``trial.report`` in the loop's thread."""
        with self._cond:
            if self._stopped:
                raise TrialPruned("the trial was stopped")
            if self.epoch >= self.budget:
                raise TrialPruned(f"the trial's budget of {self.budget} epochs is spent")
            self.epoch += 1
            self._pending.append(record)
            self._diverged = bool(record.get("diverged"))
            self._cond.notify_all()
            if self._diverged or self.epoch >= self.budget:
                return  # the last epoch: the loop returns (or raises TrialDiverged)
            while self.epoch >= self._requested and not self._stopped:
                self._cond.wait()  # the chunk is complete: wait for the next advance
            if self._stopped:
                raise TrialPruned("the trial was stopped")

    def advance(self, key: str, epochs: int) -> StepResult:
        started = time.perf_counter()
        with self._cond:
            delivered = self.epoch - len(self._pending)
            self._requested = min(self.budget, delivered + epochs)
            self._cond.notify_all()
            while not self._done and not self._diverged and self.epoch < self._requested:
                self._cond.wait()
            if self.epoch >= self.budget or self._diverged:
                # Let the loop return after its last report: the next trial starts clean.
                while not self._done:
                    self._cond.wait()
            chunk, self._pending = self._pending, []
            done = self._done
        if self._task_error is not None:
            raise self._task_error
        result = StepResult(key=key, epochs_done=self.epoch, diverged=self._diverged,
                            error=self._error)
        result.epochs = [
            {"epoch": r["epoch"], "metrics": r["metrics"], "seconds": r["seconds"]}
            for r in chunk
        ]
        result.finished = done or self._diverged or self.epoch >= self.budget
        result.seconds = time.perf_counter() - started
        return result

    def stop(self) -> None:
        """Stop the loop (its blocked ``report`` raises ``TrialPruned``) and wait for it."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(STOP_GRACE_S)
        if self._thread.is_alive():
            logger.warning("training loop of seed %s did not stop within %.0f s; moving on",
                           self.trial.seed, STOP_GRACE_S)


def _fingerprint(task: Any) -> str | None:
    """SHA-256 of a task's training and validation tensors: the same digest means the same
    data and split. ``None`` for data that is not a ``TensorDataset``."""
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
