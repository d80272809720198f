"""Speed to a target (DeepOBS, AlgoPerf's time to target): the first epoch at it, and the
epochs and seconds the final re-runs took to get there."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.results import Curves, is_finite

if TYPE_CHECKING:
    from tuner.results import StoredFinal

__all__ = ["first_epoch_at", "time_to_target"]


def first_epoch_at(run: Curves | Sequence[Mapping[str, Any]], metric: str, target: float,
                   mode: str) -> int | None:
    """The first epoch (1-based) whose ``metric`` reaches ``target``; NaN, inf and epochs
    without the metric are passed over.

    ``run`` is a run's stored :class:`~tuner.results.Curves` or its epoch reports as the
    workers send them (``[{"epoch": 1, "metrics": {...}}, ...]``).
    """
    curves = run if isinstance(run, Curves) else Curves.from_epochs(run)
    for epoch, value in enumerate(curves.of(metric), start=1):
        if is_finite(value) and (value <= target if mode == "min" else value >= target):
            return epoch
    return None


def time_to_target(finals: Sequence[StoredFinal], *, metric: str, target: float,
                   mode: str, epochs: int) -> dict[str, Any]:
    """Speed (DeepOBS, AlgoPerf): epochs and seconds until the final runs reach ``target``.

    The median over the final runs of the first epoch at the target, counted as
    ``epochs + 1`` for a run that never gets there (docs/reference.md protocol 4), the median
    training seconds until then (runs that got there), and how many got there.
    """
    hits: list[int] = []
    seconds: list[float] = []
    reached = 0
    for final in finals:
        epoch = first_epoch_at(final.curves, metric, target, mode)
        if epoch is None:
            hits.append(epochs + 1)
            continue
        reached += 1
        hits.append(epoch)
        per_epoch = [s for s in final.curves.seconds[:epoch] if is_finite(s)]
        if len(per_epoch) == epoch:
            seconds.append(sum(per_epoch))
    return {
        "epoch": statistics.median(hits) if hits else None,
        "seconds": statistics.median(seconds) if seconds else None,
        "reached": reached,
        "runs": len(finals),
    }
