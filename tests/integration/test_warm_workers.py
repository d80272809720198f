"""A server keeps the last job's idle workers for the next job on the same task (real Ray).

The next job takes them with their processes, imports and cached data (its first trial
starts at once); a job on another task ends them first, so kept workers never hold Ray's
resources against it; a kept worker that died meanwhile is replaced.
"""

from __future__ import annotations

import pytest
import ray

from tuner import parse_job
from tuner.engine.cluster import WarmWorkers, WorkerPool, worker_key

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

JOB = {"task": "digits-logreg", "optimizers": ["adam", "sgd"], "trials": 2, "epochs": 1,
       "max_concurrent": 2}


def pids(pool: WorkerPool) -> set[int]:
    return set(ray.get([worker.pid.remote() for worker in pool.workers]))


def test_the_next_job_on_the_same_task_takes_the_kept_workers() -> None:
    warm = WarmWorkers()
    first = WorkerPool(parse_job(JOB), warm=warm)
    first.start()
    before = pids(first)
    first.shutdown(keep=True)
    assert warm.held() == {"CPU": 2.0, "GPU": 0.0}

    # Another job (other optimizers, same task and slot): the same processes.
    second = WorkerPool(parse_job({**JOB, "optimizers": ["momentum"], "trials": 3}), warm=warm)
    assert second.key == first.key
    info = second.start()
    assert pids(second) == before
    assert info.train_size == 1437
    assert warm.held() == {"CPU": 0.0, "GPU": 0.0}

    # A worker that died while kept is replaced by a new one.
    second.shutdown(keep=True)
    ray.kill(warm._workers[0], no_restart=True)
    third = WorkerPool(parse_job(JOB), warm=warm)
    third.start()
    assert len(third.workers) == 2 and len(pids(third) & before) == 1
    third.shutdown(keep=True)

    # Another task: the kept workers are ended, not reused.
    other = WorkerPool(parse_job({**JOB, "task": "digits-mlp"}), warm=warm)
    assert other.key != first.key
    other.start()
    assert pids(other).isdisjoint(before)
    other.shutdown()
    assert warm.held() == {}


def test_the_key_is_the_task_and_the_slot_not_the_search() -> None:
    a = parse_job(JOB)
    b = parse_job({**JOB, "optimizers": ["rmsprop"], "sampler": "random", "seed": 4})
    c = parse_job({**JOB, "resources": {"cpus_per_trial": 0.5}})

    assert worker_key(a) == worker_key(b)
    assert worker_key(a) != worker_key(c)
