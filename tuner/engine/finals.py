"""The final phase of a job: each optimizer's best setting trained again with fresh seeds,
once its search is over (MLflow runs tagged ``final``, not trials of its study: they would
feed the sampler)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuner.engine.ledger import Ledger

__all__ = ["FinalRuns"]


class FinalRuns:
    """The final re-runs still to give to a worker, in order.

    Args:
        ledger: The job's books: its progress, and the best trial of each optimizer.
        mark: Called with ``"search"`` when the first optimizer's final phase begins (the
            start-up phases of :class:`tuner.engine.coordinator.Coordinator`).
    """

    def __init__(self, ledger: Ledger, mark: Callable[[str], None]) -> None:
        self.ledger = ledger
        self.mark = mark
        self._queue: list[tuple[str, int]] = []  # (optimizer, seed)
        self._planned: set[str] = set()

    def plan(self, deadline: float) -> None:
        """Queue the final re-runs of every optimizer whose search has ended: its budget
        started and none of its trials running, or ``deadline`` (the job's ``timeout_s``)
        passed."""
        progress = self.ledger.progress
        for name, counts in progress.optimizers.items():
            if name in self._planned or counts.running:
                continue
            if counts.started < counts.budget and time.monotonic() < deadline:
                continue  # still searching
            self._planned.add(name)
            # Enqueued trials the deadline left unasked (a re-run, the defaults) end too.
            self.ledger.close_waiting(name, reason="not run: the search's timeout_s passed first")
            seeds = self.ledger.select_best(name)
            self._queue.extend((name, seed) for seed in seeds)
            if seeds:
                if progress.phase != "final":
                    self.mark("search")
                progress.phase = "final"

    def next(self) -> tuple[str, int] | None:
        """The next re-run to give a worker (optimizer, seed), or ``None``."""
        return self._queue.pop(0) if self._queue else None

    def again(self, optimizer: str, seed: int) -> None:
        """A re-run whose worker died: it is the next one given out."""
        self._queue.insert(0, (optimizer, seed))
