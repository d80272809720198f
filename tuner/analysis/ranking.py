"""The leaderboard: final means, their spread, and Welch's test against the leader.

The protocol follows the optimizer benchmarks of docs/reference.md: rank by the mean of the
final re-runs of each optimizer's best setting (DeepOBS, Crowded Valley), show the spread
and a 95% confidence interval (Student's t), and test each optimizer against the leader
with Welch's two-sided t-test, Holm-adjusted across the comparisons of a job, so the table
says plainly when two cannot be told apart.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from tuner.analysis.speed import first_epoch_at
from tuner.results import LeaderboardRow, TrialOutcome, is_finite, outcome_of

if TYPE_CHECKING:
    from tuner.results import JobProgress, OptimizerResult
    from tuner.spec import JobSpec

__all__ = ["ALPHA", "holm", "leaderboard", "rank", "summarize", "welch_p"]

#: Below this p-value (Welch's t-test against the leader) an optimizer is "worse".
ALPHA = 0.05


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """mean, std (ddof 1), 95% CI half-width (Student's t), min, max, n of finite values."""
    from scipy import stats

    finite = [v for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "min": None, "max": None, "n": 0}
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0
    ci = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else None
    return {"mean": mean, "std": std, "ci95": ci, "min": min(finite), "max": max(finite),
            "n": n}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test; ``None`` with fewer than two values a side."""
    from scipy import stats

    a = [v for v in a if is_finite(v)]
    b = [v for v in b if is_finite(v)]
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():
        # Nearly identical values (accuracies on 360 images move in steps of 1/360): scipy
        # warns of precision loss; the p-value is still the test's answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's (1979) step-down adjustment of ``p_values`` (``None`` = no test), in order.

    With the ``m`` tests sorted ascending, ``p(1) <= ... <= p(m)``, the adjusted
    ``p(i) = max over j <= i of min(1, (m - j + 1) * p(j))``; rejecting where the adjusted
    p-value is below ``alpha`` controls the family-wise error rate at ``alpha``.

    Example:
        >>> holm([0.01, None, 0.04, 0.03])
        [0.03, None, 0.06, 0.06]
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for j, (p, i) in enumerate(tested, start=1):
        running = max(running, min(1.0, (m - j + 1) * p))
        out[i] = running
    return out


def _row(spec: JobSpec, name: str, result: OptimizerResult, progress: JobProgress
         ) -> LeaderboardRow:
    finals = tuple(f.value for f in result.finals if f.value is not None)
    stats = summarize(finals)
    counts = progress.optimizers[name]
    hyper = result.hyperparameters or {}
    target_epoch, target_reached = None, None
    if spec.target is not None:
        hits = [first_epoch_at(f.epochs, spec.metric, spec.target, spec.mode)
                for f in result.finals]
        reached = sorted(e for e in hits if e is not None)
        target_epoch = reached[len(reached) // 2] if reached else None
        target_reached = f"{len(reached)}/{len(hits)}"
    return LeaderboardRow(
        optimizer=name, best=result.best_value, mean=stats["mean"], std=stats["std"],
        ci95=stats["ci95"], seeds=int(stats["n"] or 0),
        finals_diverged=sum(1 for f in result.finals
                            if outcome_of(f.state) is TrialOutcome.DIVERGED),
        finals_failed=sum(1 for f in result.finals if f.value is None),
        trial=result.best_trial, lr=hyper.get("lr"), batch_size=hyper.get("batch_size"),
        complete=counts.complete, pruned=counts.pruned, diverged=counts.diverged,
        failed=counts.failed, finals=finals, target_epoch=target_epoch,
        target_reached=target_reached,
    )


def rank(spec: JobSpec, results: Mapping[str, OptimizerResult],
         progress: JobProgress) -> list[LeaderboardRow]:
    """One row per optimizer, best first.

    Ranked by the mean of the final re-runs when there are any, else by the best trial;
    optimizers without a completed trial come last.
    """
    sign = 1.0 if spec.mode == "min" else -1.0

    def key(row: LeaderboardRow) -> tuple[int, float]:
        # Final means first. A diverged final run is a failure, never dropped (protocol
        # point 2): an optimizer with one ranks after those whose final runs all completed.
        # One whose final runs all failed never leads on its one lucky trial; one without
        # any completed trial comes last.
        if row.mean is not None:
            return (1 if row.finals_failed else 0, sign * row.mean)
        if row.best is not None:
            return (2, sign * row.best)
        return (3, 0.0)

    rows = sorted((_row(spec, name, result, progress) for name, result in results.items()),
                  key=key)
    leader = rows[0] if rows else None
    raw = [None if leader is None or i == 0 else welch_p(row.finals, leader.finals)
           for i, row in enumerate(rows)]
    # k - 1 tests against the leader: Holm's step-down keeps the chance of any false
    # "worse" at ALPHA (uncorrected, 6 tests at 0.05 give ~26%).
    adjusted = holm(raw)
    return [replace(row, rank=i, p_raw=p_raw, p_vs_leader=p,
                    tied_with_leader=None if p is None else p >= ALPHA)
            for i, (row, p_raw, p) in enumerate(zip(rows, raw, adjusted, strict=True), start=1)]


def leaderboard(spec: JobSpec, results: Mapping[str, OptimizerResult],
                progress: JobProgress) -> list[dict[str, object]]:
    """:func:`rank` as the jobs table stores it (``LeaderboardRow.to_dict`` per row)."""
    return [row.to_dict() for row in rank(spec, results, progress)]
