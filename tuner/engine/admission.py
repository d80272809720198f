"""Which queued job ``tuner serve`` may start now: one at a time, and only when Ray has room
for all of its workers.

The coordinator starts ``min(max_concurrent, what the cluster fits)`` workers and waits until
every one is placed; two jobs starting together on a small cluster could each hold part of it
and wait for ever. So one job starts at a time, and only when the free CPUs and GPUs hold all
its workers (:func:`tuner.engine.cluster.room_for`; the idle workers a server keeps give way);
until then it stays queued (and is cancelled at once if asked). A job that can never fit is
let through: the coordinator fails it with a message saying why.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from tuner.engine.cluster import WarmWorkers, room_for

__all__ = ["Admission"]

#: Admission is the service's: its log says so.
logger = logging.getLogger("tuner.engine.service")

#: How long Ray's view of free resources lags behind the placement of a job's workers.
SETTLE_S = 1.0


class Admission:
    """The jobs of a server still placing their workers, and whether the next one fits.

    Args:
        warm: The idle workers the server keeps (they give way to a new job).
    """

    def __init__(self, warm: WarmWorkers) -> None:
        self.warm = warm
        self._lock = threading.Lock()
        self._starting: set[int] = set()  # jobs whose workers are not all placed yet
        self._placed_at = 0.0  # when the last job finished placing its workers
        self._waiting_logged = False

    def fits(self, spec: dict[str, Any]) -> bool:
        """Whether the job ``spec`` may start now: no other job is placing its workers, and
        Ray's free resources (with the kept workers') hold all of its workers."""
        with self._lock:
            if self._starting:
                return False
        if time.monotonic() - self._placed_at < SETTLE_S:
            return False
        free = dict(ray.available_resources())
        for name, held in self.warm.held().items():
            free[name] = free.get(name, 0.0) + held
        ok, waiting = room_for(spec, total=ray.cluster_resources(), free=free)
        if waiting and not self._waiting_logged:
            logger.info("next job waits for Ray resources: %s", waiting)
        self._waiting_logged = not ok
        return ok

    def starting(self, job_id: int) -> None:
        """Job ``job_id`` was claimed: no other starts until it has placed its workers."""
        with self._lock:
            self._starting.add(job_id)

    def progress(self, job_id: int, snapshot: Any) -> None:
        """A job's progress: past its ``starting`` phase, its workers are placed."""
        if snapshot.phase != "starting":
            self.placed(job_id)

    def placed(self, job_id: int) -> None:
        """Job ``job_id`` has placed its workers (or ended without)."""
        with self._lock:
            if job_id in self._starting:
                self._starting.discard(job_id)
                self._placed_at = time.monotonic()
