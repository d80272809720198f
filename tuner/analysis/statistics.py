"""Statistics of a job's results: pure functions, no I/O, no scheduler.

The protocol follows the optimizer benchmarks of REFERENCE.md: rank by the mean of the
final re-runs of each optimizer's best setting (DeepOBS, Crowded Valley), show the spread
and a 95% confidence interval (Student's t), and test each optimizer against the leader
with Welch's two-sided t-test, Holm-adjusted across the comparisons of a job, so the table
says plainly when two cannot be told apart. Beyond the leaderboard: tunability (expected
best after k trials), trial-outcome shares, speed to a target, edge and inclusion warnings,
all over the stored result of a job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.results import better, is_finite

if TYPE_CHECKING:
    from tuner.results import JobProgress, OptimizerResult
    from tuner.spec import JobSpec

__all__ = [
    "ALPHA",
    "SHUFFLES",
    "better",
    "edge_warnings",
    "expected_best",
    "expected_best_exact",
    "first_epoch_at",
    "first_index_at",
    "holm",
    "inclusion_warnings",
    "job_worst",
    "leaderboard",
    "report_facts",
    "spread",
    "summarize",
    "time_to_target",
    "trial_scores",
    "trial_shares",
    "trials_to_within",
    "tunability",
    "welch_p",
]

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
    import warnings

    with warnings.catch_warnings():
        # Nearly identical values (accuracies on 360 images move in steps of 1/360): scipy
        # warns of precision loss; the p-value is still the test's answer.
        warnings.simplefilter("ignore", RuntimeWarning)
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
            "finals_failed": sum(1 for f in result.finals if f.value is None),
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
        # Final means first. A diverged final run is a failure, never dropped (protocol
        # point 2): an optimizer with one ranks after those whose final runs all completed.
        # One whose final runs all failed never leads on its one lucky trial; one without
        # any completed trial comes last.
        if row["mean"] is not None:
            return (1 if row["finals_failed"] else 0, sign * row["mean"])
        if row["best"] is not None:
            return (2, sign * row["best"])
        return (3, 0.0)

    rows.sort(key=key)
    leader = rows[0] if rows else None
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        row["p_raw"] = (None if leader is None or row is leader
                        else welch_p(row["finals"], leader["finals"]))
    # k - 1 tests against the leader: Holm's step-down keeps the chance of any false
    # "worse" at ALPHA (uncorrected, 6 tests at 0.05 give ~26%).
    adjusted = holm([row["p_raw"] for row in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_vs_leader"] = p
        row["tied_with_leader"] = None if p is None else p >= ALPHA
    return rows


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


# -- the comparison report: statistics over a job's stored result --------------------------
#
# Everything below reads the JSON the job runner stores (``Job.result``): ``optimizers[name]``
# holds ``space`` (SearchSpace.to_dict()), ``hyperparameters`` of the best trial, ``trials``
# (TrialRecord dicts) and ``finals`` (the multi-seed re-runs with their per-epoch curves).

#: Shuffles of each optimizer's trial order for the expected best after k trials
#: (REFERENCE.md protocol 5: closed form or >= 1,000 shuffles; Sivaprasad et al. 2020).
SHUFFLES = 1000

#: A continuous parameter whose best value lies in the outer 5% of its (log) range is "at the
#: edge": the optimum may lie outside the range (REFERENCE.md protocol 6).
EDGE_MARGIN = 0.05

#: Inclusion relations (Choi et al. 2019): the first optimizer can express the second (Adam
#: with a large eps is Momentum with a rescaled rate), so tuned properly it never loses to it.
#: A clear loss means its search space was too narrow. Only pairs our shipped spaces keep:
#: RMSprop includes Momentum only with its own momentum tuned, AdamW only with decay 0.
INCLUSIONS: tuple[tuple[str, str], ...] = (
    ("adam", "momentum"),
    ("nadam", "nag"),
)


def trial_scores(trials: Sequence[Mapping[str, Any]], *, mode: str,
                 worst: float | None = None) -> list[float]:
    """Each trial's score in the order the trials were asked (Optuna trial number).

    A COMPLETE trial scores its final value. Every other trial (pruned, diverged, failed)
    scores ``worst``: protocol 2 counts failures with the worst score and never drops them
    (a pruned trial did not deliver a configuration trained to the budget either). When
    ``worst`` is ``None`` it is the worst finite value among ``trials``. A ``LOST`` trial
    (its worker or coordinator died; its configuration was run again) is not a result.
    """
    ordered = sorted((t for t in trials if t.get("state") != "LOST"),
                     key=lambda t: t["number"])
    values = [t.get("value") if t.get("state") == "COMPLETE" else None for t in ordered]
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
    (Sivaprasad et al. 2020; REFERENCE.md protocol 5). ``NaN`` scores (no finite value at
    all) give ``NaN`` curves.

    Example:
        >>> curve = expected_best([0.3, 0.1, 0.2], mode="min", shuffles=2000)
        >>> round(curve["mean"][0], 1), curve["mean"][-1]
        (0.2, 0.1)
    """
    import numpy as np

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


def tunability(trials: Sequence[Mapping[str, Any]], *, mode: str, worst: float | None = None,
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


def trial_shares(trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and shares of trial outcomes: ``complete``, ``pruned``, ``diverged``, ``failed``.

    ``LOST`` trials (their worker or coordinator died; re-run by the coordinator, not in the
    budget) are left out, as in the job's counts.
    """
    counts = {"complete": 0, "pruned": 0, "diverged": 0, "failed": 0}
    for t in trials:
        state = t.get("state")
        if state == "LOST":
            continue
        key = {"COMPLETE": "complete", "PRUNED": "pruned", "DIVERGED": "diverged"}.get(
            str(state), "failed")
        counts[key] += 1
    n = sum(counts.values())
    shares = {f"share_{k}": (v / n if n else None) for k, v in counts.items()}
    return {**counts, "n": n, **shares}


def edge_warnings(name: str, hyperparameters: Mapping[str, Any] | None,
                  space: Mapping[str, Any] | None, *, margin: float = EDGE_MARGIN) -> list[str]:
    """Warn for each tuned continuous parameter whose best value lies at the edge of its range.

    ``space`` is ``SearchSpace.to_dict()`` (``params.<name>: {type, low, high, log,
    one_minus}``; ranges of ``one_minus`` parameters are of ``q = 1 - value``). The position is
    measured on the sampling scale (log for log-uniform): the outer ``margin`` of it on either
    side is the edge. Categorical parameters (batch size, weight decay grids) are not checked,
    nor the lower edge of ``lr_decay`` (all but a constant rate: the natural end of that range).
    REFERENCE.md protocol 6.

    Example:
        >>> space = {"params": {"lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": True}}}
        >>> edge_warnings("adam", {"lr": 0.095}, space)  # doctest: +ELLIPSIS
        ['adam: the best lr=0.095 lies at the upper edge of its range [1e-05, 0.1]; ...']
    """
    if not hyperparameters or not space:
        return []
    out: list[str] = []
    for param, p in (space.get("params") or {}).items():
        if p.get("type") not in ("float", "int") or param not in hyperparameters:
            continue
        value, low, high = hyperparameters[param], p.get("low"), p.get("high")
        if not (is_finite(value) and is_finite(low) and is_finite(high)) or high <= low:
            continue
        one_minus = bool(p.get("one_minus"))
        x = 1.0 - value if one_minus else value
        log = bool(p.get("log")) or one_minus
        if log and (x <= 0 or low <= 0):
            continue
        if log:
            position = (math.log(x) - math.log(low)) / (math.log(high) - math.log(low))
        else:
            position = (x - low) / (high - low)
        if margin <= position <= 1 - margin:
            continue
        if param == "lr_decay" and position < margin:
            continue  # the lower edge of the decay is all but a constant rate: nothing to widen
        # Say it in the value's terms: for one_minus the value's upper edge is q's lower one.
        lo_v, hi_v = (1.0 - high, 1.0 - low) if one_minus else (low, high)
        side = ("upper" if position < margin else "lower") if one_minus else (
            "lower" if position < margin else "upper")
        out.append(
            f"{name}: the best {param}={value:.3g} lies at the {side} edge of its range "
            f"[{lo_v:.3g}, {hi_v:.3g}]; the optimum may lie outside it: widen it "
            f"(space_overrides.{name}.{param})"
        )
    return out


def inclusion_warnings(rows: Sequence[Mapping[str, Any]], *, mode: str,
                       alpha: float = ALPHA) -> list[str]:
    """Warn where a more general optimizer is clearly worse than one it includes.

    Choi et al. (2019): with Momentum ⊆ Adam and Nesterov ⊆ NAdam (:data:`INCLUSIONS`), a tuned
    general optimizer never loses to the special one; "clearly worse" is a worse mean of the
    final re-runs with Welch's p < ``alpha``. REFERENCE.md protocol 7.
    """
    by_name = {row["optimizer"]: row for row in rows}
    out: list[str] = []
    for general, special in INCLUSIONS:
        g, s = by_name.get(general), by_name.get(special)
        if g is None or s is None or g.get("mean") is None or s.get("mean") is None:
            continue
        if not better(s["mean"], g["mean"], mode):
            continue
        p = welch_p(g.get("finals") or [], s.get("finals") or [])
        if p is None or p >= alpha:
            continue
        out.append(
            f"{general} is clearly worse than {special} (final mean {g['mean']:.4g} vs "
            f"{s['mean']:.4g}, Welch p={p:.2g}), although {general} includes {special} "
            f"(Choi et al. 2019): {general}'s search space was too narrow or its budget too "
            f"small: tune eps on a log scale up to 1 and beta1 over [0.5, 0.999], or give it more "
            f"trials"
        )
    return out


def first_index_at(curve: Sequence[float | None], target: float, mode: str) -> int | None:
    """The first epoch (1-based) at which a per-epoch ``curve`` reaches ``target``."""
    for epoch, value in enumerate(curve, start=1):
        if is_finite(value) and (value <= target if mode == "min" else value >= target):
            return epoch
    return None


def time_to_target(finals: Sequence[Mapping[str, Any]], *, metric: str, target: float,
                   mode: str, epochs: int) -> dict[str, Any]:
    """Speed (DeepOBS, AlgoPerf): epochs and seconds until the final runs reach ``target``.

    The median over the final runs of the first epoch at the target, counted as
    ``epochs + 1`` for a run that never gets there (REFERENCE.md protocol 4), the median
    training seconds until then (runs that got there), and how many got there.
    """
    import statistics

    hits: list[int] = []
    seconds: list[float] = []
    reached = 0
    for final in finals:
        curves = final.get("curves") or {}
        epoch = first_index_at(curves.get(metric) or [], target, mode)
        if epoch is None:
            hits.append(epochs + 1)
            continue
        reached += 1
        hits.append(epoch)
        per_epoch = [s for s in (curves.get("seconds") or [])[:epoch] if is_finite(s)]
        if len(per_epoch) == epoch:
            seconds.append(sum(per_epoch))
    return {
        "epoch": statistics.median(hits) if hits else None,
        "seconds": statistics.median(seconds) if seconds else None,
        "reached": reached,
        "runs": len(finals),
    }


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """``summarize`` plus the median of the finite values."""
    import statistics

    out = dict(summarize([v for v in values if v is not None]))
    finite = [v for v in values if is_finite(v)]
    out["median"] = statistics.median(finite) if finite else None
    return out


def job_worst(result: Mapping[str, Any], *, mode: str) -> float | None:
    """The worst finite trial value of the whole job: the score of a failed trial."""
    values = [t.get("value") for o in (result.get("optimizers") or {}).values()
              for t in o.get("trials") or []]
    finite = [v for v in values if is_finite(v)]
    if not finite:
        return None
    return max(finite) if mode == "min" else min(finite)


def report_facts(spec: Mapping[str, Any], result: Mapping[str, Any], *,
                 shuffles: int = SHUFFLES) -> dict[str, Any]:
    """Everything the report states besides the leaderboard, per optimizer and as warnings.

    ``spec`` is the stored job spec (``JobSpec.model_dump(mode="json")``), ``result`` the
    stored result. Per optimizer: ``tunability`` (:func:`tunability`, failures scored with the
    job's worst value), ``shares`` (:func:`trial_shares`), ``seeds`` (the spread of the final
    re-runs: sensitivity to initialization), ``hyper`` (the spread of the complete trials:
    sensitivity to the hyperparameters), ``speed`` (:func:`time_to_target`, when the job has
    a ``target``), ``seconds_per_epoch`` (median over the final runs). ``warnings``: edge and
    inclusion warnings, and optimizers without a complete trial.
    """
    import statistics

    mode, metric = spec["mode"], spec["metric"]
    worst = job_worst(result, mode=mode)
    per: dict[str, Any] = {}
    warnings: list[str] = []
    for name, o in (result.get("optimizers") or {}).items():
        trials = o.get("trials") or []
        finals = o.get("finals") or []
        facts: dict[str, Any] = {
            "tunability": tunability(trials, mode=mode, worst=worst, shuffles=shuffles),
            "shares": trial_shares(trials),
            "seeds": spread([f.get("value") for f in finals]),
            "hyper": spread([t.get("value") for t in trials if t.get("state") == "COMPLETE"]),
        }
        per_epoch = [s for f in finals for s in (f.get("curves") or {}).get("seconds") or []
                     if is_finite(s)]
        facts["seconds_per_epoch"] = statistics.median(per_epoch) if per_epoch else None
        if spec.get("target") is not None:
            facts["speed"] = time_to_target(finals, metric=metric, target=spec["target"],
                                            mode=mode, epochs=spec["epochs"])
        per[name] = facts
        if o.get("best_value") is None:
            warnings.append(f"{name}: no trial completed; it is ranked last and has no final "
                            "re-runs")
        warnings.extend(edge_warnings(name, o.get("hyperparameters"), o.get("space")))
        diverged = facts["shares"]["share_diverged"]
        if diverged is not None and diverged >= 0.5:
            warnings.append(f"{name}: {diverged:.0%} of its trials diverged; its learning-rate "
                            "range reaches far into instability")
        n_div = sum(1 for f in finals if f.get("state") == "DIVERGED")
        if n_div:
            warnings.append(f"{name}: {n_div} of {len(finals)} final re-runs of its best "
                            "setting diverged: the setting is fragile across seeds")
    warnings.extend(inclusion_warnings(result.get("leaderboard") or [], mode=mode))
    return {"optimizers": per, "warnings": warnings, "worst": worst}
