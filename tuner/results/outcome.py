"""How a trial ends, and the little arithmetic of results every side shares.

:class:`TrialOutcome` is the one vocabulary of trial states (the live counts, the stored
result, the analysis); :func:`better` compares two values under a job's mode; :func:`is_finite`
tells a real number from ``None``, NaN and inf; :func:`final_seeds` are the final re-runs'
seeds.
"""

from __future__ import annotations

import enum
import math
from typing import Any, TypeGuard

__all__ = ["FINAL_SEED_BASE", "TrialOutcome", "better", "final_seeds", "is_finite"]

#: Final re-runs use the seeds of DeepOBS (42, 43, ...), shifted by the job's seed.
FINAL_SEED_BASE = 42


def final_seeds(seed: int, n: int) -> list[int]:
    """The seeds of a job's ``n`` final re-runs: DeepOBS's 42, 43, ... shifted by ``seed``."""
    return [FINAL_SEED_BASE + seed + i for i in range(n)]


def better(a: float, b: float, mode: str) -> bool:
    """``a`` is strictly better than ``b`` under ``mode`` (``"min"`` or ``"max"``)."""
    return a < b if mode == "min" else a > b


class TrialOutcome(enum.StrEnum):
    """How a trial or final re-run ended.

    ``DIVERGED`` (a NaN or inf loss) is a failure the protocol counts with the worst score;
    ``LOST`` is a trial whose worker or coordinator died: its configuration is run again
    and it does not count against the budget.
    """

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    DIVERGED = "DIVERGED"
    FAIL = "FAIL"
    LOST = "LOST"

    @property
    def mlflow_state(self) -> str:
        """The ``tuner.state`` tag of its MLflow run: a lost trial's run is a ``FAIL``."""
        return "FAIL" if self is TrialOutcome.LOST else self.value


def is_finite(value: Any) -> TypeGuard[float]:
    """A real, finite number (not a bool, not None, not NaN or inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
