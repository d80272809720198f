"""Tunability (Sivaprasad et al. 2020): the expected best after k trials over random trial
orders, its summaries, and the shares of trial outcomes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tuner.results import StoredTrial, TrialOutcome, is_finite

__all__ = ["SHUFFLES", "expected_best", "expected_best_exact", "trial_scores", "trial_shares",
           "trials_to_within", "tunability"]

#: Shuffles of each optimizer's trial order for the expected best after k trials
#: (docs/reference.md protocol 5: closed form or >= 1,000 shuffles; Sivaprasad et al. 2020).
SHUFFLES = 1000

#: The share buckets of trial outcomes; any other outcome (a failure) is ``failed``.
_SHARE = {TrialOutcome.COMPLETE: "complete", TrialOutcome.PRUNED: "pruned",
          TrialOutcome.DIVERGED: "diverged"}


def trial_scores(trials: Sequence[StoredTrial], *, mode: str,
                 worst: float | None = None) -> list[float]:
    """Each trial's score in the order the trials were asked (Optuna trial number).

    A COMPLETE trial scores its final value. Every other trial (pruned, diverged, failed)
    scores ``worst``: protocol 2 counts failures with the worst score and never drops them
    (a pruned trial did not deliver a configuration trained to the budget either). When
    ``worst`` is ``None`` it is the worst finite value among ``trials``. A ``LOST`` trial
    (its worker or coordinator died; its configuration was run again) is not a result.
    """
    ordered = sorted((t for t in trials if t.state is not TrialOutcome.LOST),
                     key=lambda t: t.number)
    values = [t.value if t.state is TrialOutcome.COMPLETE else None for t in ordered]
    finite = [v for v in values if is_finite(v)]
    if worst is None and finite:
        worst = max(finite) if mode == "min" else min(finite)
    fill = math.nan if worst is None else float(worst)
    return [float(v) if is_finite(v) else fill for v in values]


def expected_best(scores: Sequence[float], *, mode: str, shuffles: int = SHUFFLES,
                  seed: int = 0, band: tuple[float, float] = (0.25, 0.75)) -> dict[str, Any]:
    """Expected best-so-far after ``k`` trials, ``k = 1..n``, over random trial orders.

    The ``n`` trial scores are shuffled ``shuffles`` times; each order gives a best-so-far
    curve. Returns ``k``, the ``mean`` curve (its exact value is the closed form
    :func:`expected_best_exact`), and the ``low``/``high`` quantiles ``band`` of the curves
    (Sivaprasad et al. 2020; docs/reference.md protocol 5). ``NaN`` scores (no finite value at
    all) give ``NaN`` curves.

    Example:
        >>> curve = expected_best([0.3, 0.1, 0.2], mode="min", shuffles=2000)
        >>> round(curve["mean"][0], 1), round(curve["mean"][-1], 6)
        (0.2, 0.1)
    """
    values = np.asarray(list(scores), dtype=float)
    n = values.size
    if n == 0:
        return {"k": [], "mean": [], "low": [], "high": [], "shuffles": shuffles}
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((shuffles, n)), axis=1)
    runs = values[orders]
    accumulate = np.minimum.accumulate if mode == "min" else np.maximum.accumulate
    curves = accumulate(runs, axis=1)
    return {
        "k": list(range(1, n + 1)),
        "mean": [float(v) for v in curves.mean(axis=0)],
        "low": [float(v) for v in np.quantile(curves, band[0], axis=0)],
        "high": [float(v) for v in np.quantile(curves, band[1], axis=0)],
        "shuffles": shuffles,
    }


def expected_best_exact(scores: Sequence[float], k: int, *, mode: str) -> float:
    """The exact expected best of ``k`` trials drawn without replacement from ``scores``.

    With the scores sorted from worst to best, the ``i``-th (1-based) is the best of a random
    ``k``-subset with probability ``C(i-1, k-1) / C(n, k)``.
    """
    n = len(scores)
    if not 1 <= k <= n:
        raise ValueError(f"`1 <= k <= n` must hold, but got ({k=}, {n=}).")
    ordered = sorted(scores, reverse=(mode == "min"))  # worst first
    total = math.comb(n, k)
    return sum(v * math.comb(i - 1, k - 1) / total
               for i, v in enumerate(ordered, start=1) if i >= k)


def trials_to_within(curve: Sequence[float], best: float, *, rel: float = 0.01) -> int | None:
    """The first ``k`` (1-based) whose expected best is within ``rel`` of ``best``.

    The tolerance is ``rel`` times the metric's scale: the larger of ``|best|`` and the gap
    from the first point (one random trial) to ``best``. For an accuracy that is 1% of the best;
    for a loss or a distance near 0 it is 1% of what tuning gained, not of a tiny best value.
    ``None`` when the curve never gets there.
    """
    if not curve or not is_finite(best):
        return None
    first = curve[0] if is_finite(curve[0]) else best
    tolerance = rel * max(abs(best), abs(first - best))
    for k, value in enumerate(curve, start=1):
        if is_finite(value) and abs(value - best) <= tolerance:
            return k
    return None


def tunability(trials: Sequence[StoredTrial], *, mode: str, worst: float | None = None,
               shuffles: int = SHUFFLES, seed: int = 0) -> dict[str, Any]:
    """How much tuning an optimizer needed (Sivaprasad et al. 2020).

    Returns the expected best-so-far ``curve`` (see :func:`expected_best`), the ``best`` of all
    trials, the expected value of a single random trial ``expected_1``, ``k_within_1pct`` (the
    first k whose expected best is within 1% of the best, :func:`trials_to_within`), and
    Sivaprasad's summaries of the curve: ``cpe`` (weighted early), ``cpu`` (uniform), ``cpl``
    (weighted late): weighted means of the expected best over k = 1..n.
    """
    scores = trial_scores(trials, mode=mode, worst=worst)
    curve = expected_best(scores, mode=mode, shuffles=shuffles, seed=seed)
    finite = [v for v in scores if is_finite(v)]
    out: dict[str, Any] = {"curve": curve, "n": len(scores), "best": None, "expected_1": None,
                           "k_within_1pct": None, "cpe": None, "cpu": None, "cpl": None}
    if not finite:
        return out
    best = min(finite) if mode == "min" else max(finite)
    mean = curve["mean"]
    n = len(mean)
    weights = {"cpe": [n - i for i in range(n)], "cpu": [1] * n, "cpl": [i + 1 for i in range(n)]}
    out.update(best=best, expected_1=mean[0], k_within_1pct=trials_to_within(mean, best))
    for key, w in weights.items():
        out[key] = sum(wi * v for wi, v in zip(w, mean, strict=True)) / sum(w)
    return out


def trial_shares(trials: Sequence[StoredTrial]) -> dict[str, Any]:
    """Counts and shares of trial outcomes: ``complete``, ``pruned``, ``diverged``, ``failed``.

    ``LOST`` trials (their worker or coordinator died; re-run by the coordinator, not in the
    budget) are left out, as in the job's counts.
    """
    counts = {"complete": 0, "pruned": 0, "diverged": 0, "failed": 0}
    for t in trials:
        if t.state is not TrialOutcome.LOST:
            counts[_SHARE.get(t.state, "failed")] += 1
    n = sum(counts.values())
    shares = {f"share_{k}": (v / n if n else None) for k, v in counts.items()}
    return {**counts, "n": n, **shares}
