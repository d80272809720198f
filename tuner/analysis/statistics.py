"""Statistics of a job's results: pure functions, no I/O, no scheduler.

The public surface of the analysis' numbers, from four modules with one job each:
:mod:`~tuner.analysis.ranking` (the leaderboard: final means, Welch's test against the
leader, Holm's adjustment), :mod:`~tuner.analysis.tunability` (expected best after k trials,
trial-outcome shares), :mod:`~tuner.analysis.speed` (time to a target) and
:mod:`~tuner.analysis.checks` (edge and inclusion warnings). :func:`report_facts` gathers
what the report states besides the leaderboard, over a job's stored result
(:class:`tuner.results.JobResult`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.analysis.checks import EDGE_MARGIN, INCLUSIONS, edge_warnings, inclusion_warnings
from tuner.analysis.ranking import ALPHA, holm, leaderboard, rank, summarize, welch_p
from tuner.analysis.speed import first_epoch_at, time_to_target
from tuner.analysis.tunability import (
    SHUFFLES,
    expected_best,
    expected_best_exact,
    trial_scores,
    trial_shares,
    trials_to_within,
    tunability,
)
from tuner.results import JobResult, TrialOutcome, better, is_finite

__all__ = [
    "ALPHA",
    "EDGE_MARGIN",
    "INCLUSIONS",
    "SHUFFLES",
    "better",
    "edge_warnings",
    "expected_best",
    "expected_best_exact",
    "first_epoch_at",
    "holm",
    "inclusion_warnings",
    "job_worst",
    "leaderboard",
    "rank",
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


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """``summarize`` plus the median of the finite values."""
    out = dict(summarize([v for v in values if v is not None]))
    finite = [v for v in values if is_finite(v)]
    out["median"] = statistics.median(finite) if finite else None
    return out


def job_worst(result: JobResult, *, mode: str) -> float | None:
    """The worst finite trial value of the whole job: the score of a failed trial."""
    finite = [t.value for o in result.optimizers.values() for t in o.trials
              if is_finite(t.value)]
    if not finite:
        return None
    return max(finite) if mode == "min" else min(finite)


def report_facts(spec: Mapping[str, Any], result: JobResult | Mapping[str, Any], *,
                 shuffles: int = SHUFFLES) -> dict[str, Any]:
    """Everything the report states besides the leaderboard, per optimizer and as warnings.

    ``spec`` is the stored job spec (``JobSpec.model_dump(mode="json")``), ``result`` the
    stored result (a :class:`~tuner.results.JobResult`, or the JSON it is read from). Per
    optimizer: ``tunability`` (:func:`tunability`, failures scored with the job's worst
    value), ``shares`` (:func:`trial_shares`), ``seeds`` (the spread of the final re-runs:
    sensitivity to initialization), ``hyper`` (the spread of the complete trials: sensitivity
    to the hyperparameters), ``speed`` (:func:`time_to_target`, when the job has a
    ``target``), ``seconds_per_epoch`` (median over the final runs). ``warnings``: edge and
    inclusion warnings, and optimizers without a complete trial.
    """
    if not isinstance(result, JobResult):
        result = JobResult.from_dict(result)
    mode, metric = spec["mode"], spec["metric"]
    worst = job_worst(result, mode=mode)
    per: dict[str, Any] = {}
    warnings: list[str] = []
    for name, o in result.optimizers.items():
        facts: dict[str, Any] = {
            "tunability": tunability(o.trials, mode=mode, worst=worst, shuffles=shuffles),
            "shares": trial_shares(o.trials),
            "seeds": spread([f.value for f in o.finals]),
            "hyper": spread([t.value for t in o.complete_trials]),
        }
        per_epoch = [s for f in o.finals for s in f.curves.seconds if is_finite(s)]
        facts["seconds_per_epoch"] = statistics.median(per_epoch) if per_epoch else None
        if spec.get("target") is not None:
            facts["speed"] = time_to_target(o.finals, metric=metric, target=spec["target"],
                                            mode=mode, epochs=spec["epochs"])
        per[name] = facts
        if o.best_value is None:
            warnings.append(f"{name}: no trial completed; it is ranked last and has no final "
                            "re-runs")
        warnings.extend(edge_warnings(name, o.hyperparameters, o.params))
        diverged = facts["shares"]["share_diverged"]
        if diverged is not None and diverged >= 0.5:
            warnings.append(f"{name}: {diverged:.0%} of its trials diverged; its learning-rate "
                            "range reaches far into instability")
        n_div = sum(1 for f in o.finals if f.state is TrialOutcome.DIVERGED)
        if n_div:
            warnings.append(f"{name}: {n_div} of {len(o.finals)} final re-runs of its best "
                            "setting diverged: the setting is fragile across seeds")
    warnings.extend(inclusion_warnings(result.leaderboard, mode=mode))
    return {"optimizers": per, "warnings": warnings, "worst": worst}
