"""Statistics of a job's results: the leaderboard. Pure functions over results.

The protocol follows the optimizer benchmarks of REFERENCE.md: rank by the mean of the
final re-runs of each optimizer's best setting (DeepOBS, Crowded Valley), show the spread
and a 95% confidence interval (Student's t), and test each optimizer against the leader
with Welch's two-sided t-test, so the table says plainly when two cannot be told apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.coordinator import JobProgress, OptimizerResult
    from tuner.spec import JobSpec

__all__ = [
    "edge_warnings",
    "expected_best",
    "expected_best_exact",
    "first_epoch_at",
    "first_index_at",
    "inclusion_warnings",
    "leaderboard",
    "report_facts",
    "summarize",
    "time_to_target",
    "trial_scores",
    "trial_shares",
    "trials_to_within",
    "tunability",
    "welch_p",
    "write_report",
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
        if leader is None or row is leader:
            row["p_vs_leader"], row["tied_with_leader"] = None, None
            continue
        p = welch_p(row["finals"], leader["finals"])
        row["p_vs_leader"] = p
        row["tied_with_leader"] = None if p is None else p >= ALPHA
    return rows


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


def better(a: float, b: float, mode: str) -> bool:
    """``a`` is strictly better than ``b`` under ``mode`` (``"min"`` or ``"max"``)."""
    return a < b if mode == "min" else a > b


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    finite = [v for v in values if _finite(v)]
    if worst is None and finite:
        worst = max(finite) if mode == "min" else min(finite)
    fill = math.nan if worst is None else float(worst)
    return [float(v) if _finite(v) else fill for v in values]


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
    if not curve or not _finite(best):
        return None
    first = curve[0] if _finite(curve[0]) else best
    tolerance = rel * max(abs(best), abs(first - best))
    for k, value in enumerate(curve, start=1):
        if _finite(value) and abs(value - best) <= tolerance:
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
    finite = [v for v in scores if _finite(v)]
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
            state, "failed")
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
        if not (_finite(value) and _finite(low) and _finite(high)) or high <= low:
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
        if _finite(value) and (value <= target if mode == "min" else value >= target):
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
        per_epoch = [s for s in (curves.get("seconds") or [])[:epoch] if _finite(s)]
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
    finite = [v for v in values if _finite(v)]
    out["median"] = statistics.median(finite) if finite else None
    return out


def job_worst(result: Mapping[str, Any], *, mode: str) -> float | None:
    """The worst finite trial value of the whole job: the score of a failed trial."""
    values = [t.get("value") for o in (result.get("optimizers") or {}).values()
              for t in o.get("trials") or []]
    finite = [v for v in values if _finite(v)]
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
                     if _finite(s)]
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


# -- the report files: plots and report.html ---------------------------------------------------

#: The figures of a report, in the order the HTML shows them, with their captions.
FIGURES: tuple[tuple[str, str], ...] = (
    ("convergence.png",
     "Convergence: the validation metric per epoch of the final re-runs of each optimizer's "
     "best setting; line: median across seeds, band: min–max."),
    ("lr_sensitivity.png",
     "Learning-rate sensitivity: the final value of every trial against its learning rate; "
     "hollow: pruned, x: diverged (at the worst edge), star: best trial, with its final "
     "re-runs (one dot per seed) beside it; shaded: outside the search range."),
    ("tunability.png",
     "Tunability: expected best after k trials over random orders of each optimizer's trials "
     "(band: 25–75% of the orders; the mean leaves it when a few orders are much worse), and "
     "the share of trials completed, pruned, diverged or failed."),
    ("importance.png",
     "Hyperparameter importance per optimizer: Optuna's fANOVA evaluator on the complete "
     "trials of each study."),
    ("landscape.png",
     "The path of each optimizer's best final run on the landscape (positions at the end of "
     "each epoch, from the seed's start point); star: the global minimum."),
    ("seeds_vs_hyperparameters.png",
     "Sensitivity to initialization next to sensitivity to the hyperparameters: the final "
     "re-runs (across seeds) beside every complete trial (across hyperparameters)."),
)

_VERSIONED = ("torch", "optuna", "ray", "mlflow", "numpy", "scipy", "scikit-learn",
              "matplotlib", "tuner")


def _problem_text(problem: Mapping[str, Any] | None) -> str:
    if not problem:
        return "not recorded"
    digest = problem.get("data_sha256")
    return (f"task {problem.get('task')}, {problem.get('train_size')} training and "
            f"{problem.get('val_size')} validation examples, data SHA-256 "
            f"{digest if digest else 'not computable (not a TensorDataset)'}")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a result (REFERENCE.md protocol 8)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_report(job_id: int, spec: Any, result: Mapping[str, Any], out_dir: Path, *,
                 storage_url: str | None = None, shuffles: int = SHUFFLES) -> list[Path]:
    """Write ``out_dir/report.html`` and its PNGs beside it; return the files written.

    Pure over the stored result, except that it opens the Optuna studies
    ``job-<id>-<optimizer>`` at ``storage_url`` for the hyperparameter importance (skipped,
    with a note, when ``storage_url`` is ``None``). ``spec`` is the stored job spec (a dict,
    or a :class:`~tuner.spec.JobSpec`). The PNGs come first in the list, ``report.html`` last.

    Example:
        >>> with store.session_scope(url) as session:
        ...     job = store.get_job(session, 7)
        ...     files = write_report(job.id, job.spec, job.result, Path("report-7"),
        ...                          storage_url=url)
    """
    from tuner import plots

    if hasattr(spec, "model_dump"):
        spec = spec.model_dump(mode="json")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = report_facts(spec, result, shuffles=shuffles)
    colors = plots.optimizer_colors(list(result.get("optimizers") or {}))
    drawn: dict[str, Path] = {}
    notes: list[str] = []
    for filename, draw in (
        ("convergence.png", lambda p: plots.plot_convergence(spec, result, p, colors=colors)),
        ("lr_sensitivity.png",
         lambda p: plots.plot_lr_sensitivity(spec, result, p, colors=colors)),
        ("tunability.png",
         lambda p: plots.plot_tunability(spec, result, p, facts=facts, colors=colors)),
        ("landscape.png", lambda p: plots.plot_landscape(spec, result, p, colors=colors)),
        ("seeds_vs_hyperparameters.png",
         lambda p: plots.plot_seed_sensitivity(spec, result, p, colors=colors)),
    ):
        path = draw(out_dir / filename)
        if path is not None:
            drawn[filename] = path
    path, importance_notes = plots.plot_importance(
        spec, result, out_dir / "importance.png", job_id=job_id, storage_url=storage_url,
        colors=colors)
    notes.extend(importance_notes)
    if path is not None:
        drawn["importance.png"] = path
    html = render_html(job_id, spec, result, facts=facts, figures=list(drawn), notes=notes,
                       versions=result.get("versions") or library_versions(),
                       versions_stored="versions" in result)
    report = out_dir / "report.html"
    report.write_text(html, encoding="utf-8")
    ordered = [drawn[name] for name, _ in FIGURES if name in drawn]
    return [*ordered, report]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value)


def protocol_text(spec: Mapping[str, Any]) -> str:
    """The comparison protocol of a job, in one paragraph (plain text)."""
    from tuner.coordinator import FINAL_SEED_BASE

    seed, n = int(spec.get("seed", 0)), int(spec.get("final_seeds", 0))
    seeds = (f"seeds {FINAL_SEED_BASE + seed}–{FINAL_SEED_BASE + seed + n - 1}"
             if n > 1 else f"seed {FINAL_SEED_BASE + seed}")
    target = (f" Speed is the first epoch at which a final run reaches {spec['metric']} = "
              f"{spec['target']:g} (median over the runs; {spec['epochs'] + 1} when never)."
              if spec.get("target") is not None else "")
    return (
        f"Every optimizer got the same budget: {spec['trials']} trials of at most "
        f"{spec['epochs']} epochs, in its own Optuna study (sampler {spec['sampler']}, pruner "
        f"{spec['pruner']}, sampler seed {seed}), on the same task and data split. The best "
        f"trial of each study was selected on the validation metric {spec['metric']} "
        f"({spec['mode']}imize) only. Its setting was then re-trained {n} times with "
        f"{seeds} (DeepOBS's 42, 43, … shifted by the job's seed); these final re-runs are not "
        f"trials of the study. Optimizers are ranked by the mean of their final re-runs; each "
        f"is compared with the leader by Welch's two-sided t-test (unequal variances) at "
        f"α = {ALPHA}: p ≥ {ALPHA} means the two cannot be told apart (tied); an optimizer "
        f"with a diverged final re-run ranks after those whose re-runs all completed. The 95% "
        f"confidence interval is Student's t on the final runs. Diverged trials (NaN or inf "
        f"loss) are counted as failures with the job's worst score, never dropped; pruned "
        f"trials count the same way in the tunability curves.{target}"
    )


def render_html(job_id: int, spec: Mapping[str, Any], result: Mapping[str, Any], *,
                facts: Mapping[str, Any], figures: Sequence[str], notes: Sequence[str] = (),
                versions: Mapping[str, str] | None = None,
                versions_stored: bool = False) -> str:
    """The self-contained ``report.html`` (inline CSS; the PNGs referenced beside it)."""
    from html import escape

    import yaml

    metric, mode = spec["metric"], spec["mode"]
    arrow = "↓" if mode == "min" else "↑"
    rows = result.get("leaderboard") or []
    show_target = spec.get("target") is not None
    head = ["#", "optimizer", f"final {metric} {arrow}<br>mean ± std (n)", "95% CI ±",
            "median [min, max]", "vs #1 (Welch t)", "best trial", "lr", "batch",
            "trials ok / pruned / diverged / failed", "s / epoch"]
    if show_target:
        head.append(f"epoch (s) at target {spec['target']:g}")
    body = []
    for row in rows:
        name = row["optimizer"]
        f = facts["optimizers"].get(name, {})
        seeds = f.get("seeds") or {}
        if row.get("mean") is not None:
            score = f"{_fmt(row['mean'])} ± {_fmt(row['std'], 2)} ({row['seeds']})"
        else:
            score = "–"
        p = row.get("p_vs_leader")
        if row.get("rank") == 1:
            verdict = '<span class="leader">leader</span>'
        elif p is None:
            verdict = "–"
        elif row.get("tied_with_leader"):
            verdict = f'<span class="tied">tied</span> p = {p:.2f}'
        else:
            verdict = f'<span class="worse">worse</span> p = {p:.2g}'
        best = (f"{_fmt(row['best'])} (#{row['trial']})" if row.get("best") is not None
                else "–")
        spread_text = (f"{_fmt(seeds.get('median'))} [{_fmt(seeds.get('min'))}, "
                       f"{_fmt(seeds.get('max'))}]" if seeds.get("n") else "–")
        cells = [str(row.get("rank", "")), f"<b>{escape(name)}</b>", score,
                 _fmt(row.get("ci95"), 2), spread_text, verdict, best, _fmt(row.get("lr"), 2),
                 _fmt(row.get("batch_size")),
                 f"{row['complete']} / {row['pruned']} / {row['diverged']} / {row['failed']}",
                 _fmt(f.get("seconds_per_epoch"), 2)]
        if show_target:
            speed = f.get("speed") or {}
            epoch = speed.get("epoch")
            never = epoch is not None and epoch > spec["epochs"]
            text = (f"never (&gt; {spec['epochs']})" if never else
                    f"{_fmt(epoch)} ({_fmt(speed.get('seconds'), 2)} s)")
            cells.append(f"{text} · {speed.get('reached', 0)}/{speed.get('runs', 0)} runs")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
             "<tbody>" + "".join(body) + "</tbody></table>")

    tun_rows = []
    for name in [r["optimizer"] for r in rows] or list(facts["optimizers"]):
        f = facts["optimizers"].get(name)
        if f is None:
            continue
        t, s, seeds, hyper = f["tunability"], f["shares"], f["seeds"], f["hyper"]
        ratio = (hyper["std"] / seeds["std"] if hyper.get("std") and seeds.get("std")
                 else None)
        tun_rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in [
                f"<b>{escape(name)}</b>", _fmt(t["best"]), _fmt(t["expected_1"]),
                _fmt(t["k_within_1pct"]) + f" of {t['n']}", _fmt(t["cpe"]), _fmt(t["cpu"]),
                _fmt(t["cpl"]),
                f"{_pct(s['share_pruned'])} / {_pct(s['share_diverged'])} / "
                f"{_pct(s['share_failed'])}",
                _fmt(seeds.get("std"), 2), _fmt(hyper.get("std"), 2),
                "–" if ratio is None else f"{ratio:.2g}×" if ratio < 10 else f"{ratio:.0f}×"])
            + "</tr>")
    tun_table = (
        "<table><thead><tr><th>optimizer</th><th>best trial</th><th>expected best of 1 "
        "trial</th><th>trials to within 1% of best</th><th>CPE (early)</th><th>CPU "
        "(uniform)</th><th>CPL (late)</th><th>pruned / diverged / failed</th>"
        "<th>std across seeds</th><th>std across hyperparameters</th>"
        "<th>hyper / seed std</th></tr></thead><tbody>" + "".join(tun_rows)
        + "</tbody></table>")

    warnings = list(facts.get("warnings") or [])
    warn_html = ("<ul class='warn'>" + "".join(f"<li>{escape(w)}</li>" for w in warnings)
                 + "</ul>" if warnings else "<p>None: no best value at the edge of its range, "
                 "no inclusion violation, no optimizer without a complete trial.</p>")
    captions = dict(FIGURES)
    figs = "".join(
        f"<figure><img src='{escape(name)}' alt='{escape(name)}'>"
        f"<figcaption>{escape(captions.get(name, name))}</figcaption></figure>"
        for name, _ in FIGURES if name in figures)
    note_html = ("<ul class='notes'>" + "".join(f"<li>{escape(n)}</li>" for n in notes)
                 + "</ul>" if notes else "")
    versions = versions or {}
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items())
    version_origin = ("stored with the job" if versions_stored
                      else "installed where this report was made, not necessarily where the "
                           "job ran")
    spec_yaml = yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True)
    best = (result.get("export") or {}).get("best")
    seconds = result.get("seconds")
    summary = (f"Job {job_id} compared {len(rows)} optimizers on <b>{escape(str(spec['task']))}"
               f"</b> by <b>{escape(metric)}</b> ({'lower' if mode == 'min' else 'higher'} is "
               f"better)" + (f"; best: <b>{escape(str(best))}</b>" if best else "")
               + (f"; it took {seconds:.0f} s." if _finite(seconds) else "."))
    return _HTML.format(
        title=escape(f"tuner report — job {job_id}: {spec.get('name', '')}"),
        summary=summary, table=table, protocol=escape(protocol_text(spec)),
        warnings=warn_html, tunability=tun_table, figures=figs, notes=note_html,
        versions=escape(version_text), version_origin=version_origin,
        problem=escape(_problem_text(result.get("problem"))),
        spec=escape(spec_yaml), shuffles=(next(iter(facts["optimizers"].values()), {})
                                          .get("tunability", {}).get("curve", {})
                                          .get("shuffles", SHUFFLES)),
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; font-size: .88em; margin: .6em 0; }}
th, td {{ border: 1px solid #ddd; padding: .3em .55em; text-align: right; }}
th {{ background: #f4f4f4; vertical-align: bottom; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
.leader {{ color: #17803d; font-weight: bold; }} .tied {{ color: #1f6fb4; font-weight: bold; }}
.worse {{ color: #b03a2e; }}
ul.warn li {{ color: #8a5a00; }} ul.notes li {{ color: #666; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: .9em; color: #444; margin-top: .3em; }}
pre {{ background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<h2>Leaderboard</h2>
{table}
<h2>Protocol</h2>
<p>{protocol}</p>
<h2>Warnings</h2>
{warnings}
<h2>Tunability and sensitivity</h2>
<p>Expected best after k trials from {shuffles} random orders of each optimizer's trials
(Sivaprasad et al. 2020); CPE, CPU and CPL are its mean over k = 1..n weighted early, uniformly
and late. "std across seeds" is the spread of the final re-runs (sensitivity to initialization),
"std across hyperparameters" that of all complete trials.</p>
{tunability}
<h2>Figures</h2>
{notes}
{figures}
<h2>Re-running this job</h2>
<p>Library versions ({version_origin}): {versions}.</p>
<p>Problem instance: {problem}.</p>
<p>The job file (<code>tuner run job.yaml</code> with the same seed on the same hardware gives
the same trials):</p>
<pre>{spec}</pre>
</body></html>
"""
