"""The data model of a job's results, and nothing else: no Optuna, no Ray, no MLflow.

Three modules, one direction: :mod:`~tuner.results.outcome` (how a trial ends,
:class:`TrialOutcome`, and the shared arithmetic), :mod:`~tuner.results.stored` (the stored
result read back typed: ``JobResult.from_dict(job.result)``) and
:mod:`~tuner.results.search` (what a running job counts and its search returns; it writes
what ``stored`` reads). The faces (CLI, API), the statistics, the export and the report import
these types from here, never the coordinator.
"""

from tuner.results.outcome import FINAL_SEED_BASE, TrialOutcome, better, final_seeds, is_finite
from tuner.results.search import (
    FinalRun,
    JobOutcome,
    JobProgress,
    OptimizerProgress,
    OptimizerResult,
    SearchResult,
    TrialRecord,
)
from tuner.results.stored import (
    Curves,
    JobResult,
    LandscapeInfo,
    LeaderboardRow,
    LrRangeCurve,
    StoredFinal,
    StoredOptimizer,
    StoredParam,
    StoredTrial,
    jsonable,
    outcome_of,
)

__all__ = [
    "FINAL_SEED_BASE",
    "Curves",
    "FinalRun",
    "JobOutcome",
    "JobProgress",
    "JobResult",
    "LandscapeInfo",
    "LeaderboardRow",
    "LrRangeCurve",
    "OptimizerProgress",
    "OptimizerResult",
    "SearchResult",
    "StoredFinal",
    "StoredOptimizer",
    "StoredParam",
    "StoredTrial",
    "TrialOutcome",
    "TrialRecord",
    "better",
    "final_seeds",
    "is_finite",
    "jsonable",
    "outcome_of",
]
