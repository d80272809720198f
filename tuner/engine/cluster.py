"""The Ray side of the coordinator: join or start Ray, size a job's workers, keep them up.

A job runs on long-lived :class:`workers.actor.TrialWorker` actors, one per resource slot,
placed by Ray resources (``cpus_per_trial``, fractional ``gpus_per_trial``). How many fit
is :func:`workers_that_fit`, shared by the coordinator (how many to start) and by the
service (whether a queued job fits now: :func:`room_for`). A :class:`WorkerPool` starts a
job's workers, builds its task on each (which loads and caches the data set there), hands
out idle ones and replaces one that died.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError, RayTaskError, RuntimeEnvSetupError

from tuner.code import runtime_env, worker_failure
from tuner.errors import TaskError, TunerError
from workers.actor import TrialWorker, WorkerInfo

if TYPE_CHECKING:
    from tuner.config import Settings
    from tuner.spec import JobSpec

__all__ = ["WarmWorkers", "WorkerPool", "ensure_ray", "job_workers", "room_for", "worker_key",
           "workers_that_fit"]

logger = logging.getLogger(__name__)


def ensure_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (``RAY_ADDRESS``), or start a local Ray."""
    if ray.is_initialized():
        return
    # Ray's start-up chatter (token authentication notice, ...) is not the user's business.
    logging.getLogger("ray").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        return
    # Workers import a user's `package.module:factory` from where tuner was started.
    path = os.pathsep.join([os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(
        # A new local Ray, even beside a `ray start` cluster on this machine (which
        # address=None would join): RAY_ADDRESS is the one way to name a cluster.
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def workers_that_fit(resources: Mapping[str, float], *, cpus_per_trial: float,
                     gpus_per_trial: float) -> int:
    """How many one-trial workers ``resources`` (Ray's ``CPU``/``GPU`` totals) hold."""
    fits = int(resources.get("CPU", 0.0) // cpus_per_trial) if cpus_per_trial > 0 else 1
    if gpus_per_trial > 0:
        fits = min(fits, int(resources.get("GPU", 0.0) // gpus_per_trial))
    return fits


def job_workers(spec: JobSpec, resources: Mapping[str, float]) -> int:
    """How many workers a job starts on a cluster with ``resources``.

    ``min(max_concurrent, what fits, trials in the job)``.

    Raises:
        TunerError: not even one trial fits, with what the job asks and what the cluster has.
    """
    per_cpu, per_gpu = spec.resources.cpus_per_trial, spec.resources.gpus_per_trial
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if per_gpu > 0 and gpus == 0:
        raise TunerError(
            f"resources.gpus_per_trial: the job asks {per_gpu} GPU per trial, but the "
            "Ray cluster has no GPU; set it to 0 or join a cluster with GPUs (RAY_ADDRESS)"
        )
    fits = workers_that_fit(resources, cpus_per_trial=per_cpu, gpus_per_trial=per_gpu)
    if fits < 1:
        raise TunerError(
            f"resources: one trial needs {per_cpu} CPU and {per_gpu} GPU, but the Ray "
            f"cluster has {cpus:g} CPU and {gpus:g} GPU"
        )
    return min(spec.max_concurrent, fits, len(spec.optimizers) * spec.trials)


def room_for(spec: dict[str, Any], *, total: dict[str, float],
             free: dict[str, float]) -> tuple[bool, str | None]:
    """Whether ``free`` Ray resources hold all the workers of the job ``spec`` now; when
    not, what it needs and what is free. A job that can never fit in ``total`` is let
    through (its coordinator fails it saying why)."""
    resources = spec.get("resources") or {}
    cpu, gpu = float(resources.get("cpus_per_trial", 1)), float(
        resources.get("gpus_per_trial", 0))
    fits = workers_that_fit(total, cpus_per_trial=cpu, gpus_per_trial=gpu)
    if fits < 1:
        return True, None
    trials = int(spec.get("trials", 1)) * max(1, len(spec.get("optimizers", [])))
    workers = min(int(spec.get("max_concurrent", 1)), fits, trials)
    ok = free.get("CPU", 0.0) + 1e-9 >= workers * cpu and (
        gpu == 0 or free.get("GPU", 0.0) + 1e-9 >= workers * gpu)
    if ok:
        return True, None
    return False, (f"it needs {workers * cpu:g} CPU and {workers * gpu:g} GPU for {workers} "
                   f"workers; free: {free.get('CPU', 0.0):g} CPU, {free.get('GPU', 0.0):g} GPU")


def worker_key(spec: JobSpec) -> str:
    """What makes two jobs' workers interchangeable: the task, the resources of a slot and
    whatever else a worker is built with (its ``worker_options``, when a job has them)."""
    fields = {"task", "resources"} | ({"trainer", "code", "requirements"}
                                      & set(type(spec).model_fields))
    return json.dumps(spec.model_dump(mode="json", include=fields), sort_keys=True)


class WarmWorkers:
    """Idle workers kept between the jobs of a server (``tuner serve``).

    A finished job leaves its workers here; the next job with the same :func:`worker_key`
    takes them, with their processes, imports and cached data, so its first trial starts
    at once. Workers hold their Ray resources while they wait, so only the last job's are
    kept: giving or taking workers of another key ends the ones kept before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._workers: list[Any] = []
        self._resources: dict[str, float] = {}

    def give(self, key: str, workers: list[Any], resources: Mapping[str, float]) -> None:
        """Keep ``workers`` (their slots need ``resources`` each) for a job with ``key``."""
        with self._lock:
            if key != self._key:
                self._end(self._workers)
                self._key, self._workers = key, []
            self._workers.extend(workers)
            self._resources = dict(resources)

    def take(self, key: str, count: int) -> list[Any]:
        """Up to ``count`` kept workers for ``key``; kept workers of another key are ended."""
        with self._lock:
            if key != self._key:
                self._end(self._workers)
                self._key, self._workers, self._resources = None, [], {}
                return []
            taken, self._workers = self._workers[:count], self._workers[count:]
            return taken

    def held(self) -> dict[str, float]:
        """The Ray resources the kept workers hold (free for the next job to claim)."""
        with self._lock:
            n = len(self._workers)
            return {k: v * n for k, v in self._resources.items()}

    def clear(self) -> None:
        """End every kept worker."""
        with self._lock:
            self._end(self._workers)
            self._key, self._workers, self._resources = None, [], {}

    @staticmethod
    def _end(workers: list[Any]) -> None:
        for worker in workers:
            ray.kill(worker, no_restart=True)


class WorkerPool:
    """The workers of one job: started together, handed out when idle, replaced on death.

    Args:
        spec: The job: its task, resources and concurrency decide the workers.
        warm: Idle workers of earlier jobs to take (and give back when the job is done).
        settings: Where the job's shipped code is stored (its ``code``); its workers run in
            it (Ray's ``runtime_env``, with the job's ``requirements``).
    """

    def __init__(self, spec: JobSpec, *, warm: WarmWorkers | None = None,
                 settings: Settings | None = None) -> None:
        self.spec = spec
        self.warm = warm
        self.settings = settings
        self.runtime_env: dict[str, Any] | None = None
        self.key = worker_key(spec)
        self.workers: list[Any] = []
        self.idle: list[Any] = []
        self._info: dict[int, WorkerInfo] = {}

    def start(self) -> WorkerInfo:
        """Start the job's workers and build its task on each; the first one's description.

        Raises:
            TunerError: the cluster cannot hold one trial.
            TaskError: the workers cannot build the task (the worker's error says why).
        """
        if self.settings is not None:  # the code is read from the store, never imported here
            self.runtime_env = runtime_env(self.settings, self.spec)
        count = job_workers(self.spec, ray.cluster_resources())
        kept = self.warm.take(self.key, count) if self.warm is not None else []
        self.workers = self._alive(kept)
        self.workers += [self._new_worker() for _ in range(count - len(self.workers))]
        self.idle = list(self.workers)
        # Building the task once per worker also loads and caches its data set there.
        infos: list[WorkerInfo]
        try:
            infos = ray.get([worker.describe.remote() for worker in self.workers])
        except (RayActorError, RayTaskError, RuntimeEnvSetupError) as e:
            raise TaskError(
                f"task {self.spec.task!r}: the workers cannot build it: {worker_failure(e)}"
            ) from e
        self._info = {id(w): info for w, info in zip(self.workers, infos, strict=True)}
        return infos[0]

    def info(self, worker: Any) -> WorkerInfo | None:
        """Where a worker runs (node, device), or ``None`` for one that is gone."""
        return self._info.get(id(worker))

    def release(self, worker: Any) -> None:
        """A worker is idle again."""
        self.idle.append(worker)

    def replace(self, dead: Any) -> None:
        """Kill a worker that died and start an idle replacement."""
        self.workers.remove(dead)
        self._info.pop(id(dead), None)
        ray.kill(dead, no_restart=True)
        replacement = self._new_worker()
        self.workers.append(replacement)  # killed with the others, whatever happens next
        self._info[id(replacement)] = ray.get(replacement.describe.remote())
        self.idle.append(replacement)

    def shutdown(self, *, keep: bool = False) -> None:
        """End the job's workers; with ``keep`` (the job finished well) and warm workers,
        leave them idle for the next job instead."""
        if keep and self.warm is not None and self.workers:
            resources = self.spec.resources
            self.warm.give(self.key, self.workers, {"CPU": resources.cpus_per_trial,
                                                    "GPU": resources.gpus_per_trial})
        else:
            for worker in self.workers:
                ray.kill(worker, no_restart=True)
        self.workers, self.idle = [], []

    @staticmethod
    def _alive(workers: list[Any]) -> list[Any]:
        """The kept workers that still answer (one may have died while it waited)."""
        alive = []
        for worker in workers:
            try:
                ray.get(worker.pid.remote(), timeout=10)
            except (RayActorError, ray.exceptions.GetTimeoutError):
                ray.kill(worker, no_restart=True)
                continue
            alive.append(worker)
        return alive

    def _new_worker(self) -> Any:
        resources = self.spec.resources
        threads = max(1, int(resources.cpus_per_trial))
        code = {"runtime_env": self.runtime_env} if self.runtime_env else {}
        return TrialWorker.options(
            num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial, **code
        ).remote(self.spec.task, num_threads=threads, trainer=self.spec.trainer.model_dump())
