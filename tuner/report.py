"""Statistics of a job's results: the leaderboard. Pure functions over results.

The protocol follows the optimizer benchmarks of REFERENCE.md: rank by the mean of the
final re-runs of each optimizer's best setting (DeepOBS, Crowded Valley), show the spread
and a 95% confidence interval (Student's t), and test each optimizer against the leader
with Welch's two-sided t-test, so the table says plainly when two cannot be told apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.coordinator import JobProgress, OptimizerResult
    from tuner.spec import JobSpec

__all__ = ["first_epoch_at", "leaderboard", "summarize"]

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

    a = [v for v in a if v is not None and math.isfinite(v)]
    b = [v for v in b if v is not None and math.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def first_epoch_at(epochs: Sequence[Mapping[str, Any]], metric: str, target: float,
                   mode: str) -> int | None:
    """The first epoch whose ``metric`` reaches ``target`` (AlgoPerf's time to target)."""
    for report in epochs:
        value = report["metrics"].get(metric)
        if value is None or not math.isfinite(value):
            continue
        if (value <= target) if mode == "min" else (value >= target):
            return int(report["epoch"])
    return None


def leaderboard(
    spec: JobSpec,
    results: Mapping[str, OptimizerResult],
    progress: JobProgress,
) -> list[dict[str, Any]]:
    """One row per optimizer, best first.

    Ranked by the mean of the final re-runs when there are any, else by the best trial;
    optimizers without a completed trial come last.
    """
    sign = 1.0 if spec.mode == "min" else -1.0
    rows: list[dict[str, Any]] = []
    for name, result in results.items():
        finals = [f.value for f in result.finals if f.value is not None]
        stats = summarize(finals)
        counts = progress.optimizers[name]
        hyper = result.hyperparameters or {}
        row: dict[str, Any] = {
            "optimizer": name,
            "best": result.best_value,
            "mean": stats["mean"],
            "std": stats["std"],
            "ci95": stats["ci95"],
            "seeds": stats["n"],
            "finals_diverged": sum(1 for f in result.finals if f.state == "DIVERGED"),
            "trial": result.best_trial,
            "lr": hyper.get("lr"),
            "batch_size": hyper.get("batch_size"),
            "complete": counts.complete,
            "pruned": counts.pruned,
            "diverged": counts.diverged,
            "failed": counts.failed,
            "finals": finals,
        }
        if spec.target is not None:
            hits = [first_epoch_at(f.epochs, spec.metric, spec.target, spec.mode)
                    for f in result.finals]
            reached = sorted(e for e in hits if e is not None)
            row["target_epoch"] = reached[len(reached) // 2] if reached else None
            row["target_reached"] = f"{len(reached)}/{len(hits)}"
        rows.append(row)

    def key(row: dict[str, Any]) -> tuple[int, float]:
        score = row["mean"] if row["mean"] is not None else row["best"]
        return (0, sign * score) if score is not None else (1, 0.0)

    rows.sort(key=key)
    leader = rows[0] if rows else None
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        if leader is None or row is leader:
            row["p_vs_leader"], row["tied_with_leader"] = None, None
            continue
        p = welch_p(row["finals"], leader["finals"])
        row["p_vs_leader"] = p
        row["tied_with_leader"] = None if p is None else p >= ALPHA
    return rows
