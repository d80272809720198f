"""What a job logs to MLflow, as MLflow's metrics and parameters: a trial's epochs, summaries,
a nested job document as flat parameters; and which points of a run are there already."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Metric

__all__ = ["epoch_metrics", "finite", "flatten", "missing_points", "summary_metrics",
           "timestamp_ms"]


def timestamp_ms() -> int:
    """Now, as MLflow stamps a metric (milliseconds since the epoch)."""
    return int(time.time() * 1000)


def finite(value: float) -> float:
    """``value`` as MLflow can store it: NaN stays NaN (every backend stores it), an
    infinity becomes the largest float of its sign (some backends reject inf): a
    divergence keeps its sign."""
    if value != value:
        return float("nan")
    return max(min(float(value), 1e308), -1e308)


def summary_metrics(values: Mapping[str, float | None]) -> list[Metric]:
    """``values`` as metrics at step 0, stamped now; ``None`` is left out."""
    from mlflow.entities import Metric

    now = timestamp_ms()
    return [Metric(key=k, value=finite(v), timestamp=now, step=0) for k, v in values.items()
            if v is not None]


def epoch_metrics(epochs: Sequence[Mapping[str, Any]],
                  summary: Mapping[str, float] | None = None) -> list[Metric]:
    """A trial's epochs (``{"epoch": n, "metrics": {name: value}}``) as metrics at step
    ``n``, and its ``summary`` at step 0, all stamped now."""
    from mlflow.entities import Metric

    now = timestamp_ms()
    metrics = [
        Metric(key=name, value=finite(value), timestamp=now, step=int(report["epoch"]))
        for report in epochs
        for name, value in report["metrics"].items()
    ]
    return metrics + [Metric(key=k, value=finite(v), timestamp=now, step=0)
                      for k, v in (summary or {}).items()]


def missing_points(client: Any, run_id: str, metrics: Sequence[Metric]) -> list[Metric]:
    """The points of ``metrics`` (by key and step) that the run does not have yet.

    An earlier coordinator of the job may have logged a trial's epochs and been killed
    before it ended the run; the same epochs logged again, stamped anew, would be there
    twice (MLflow skips only a point whose timestamp, step and value it has). ``client``
    makes the calls (the tracker's, retried while MLflow is away).
    """
    present = client.get_run(run_id).data.metrics
    logged = {(point.key, point.step)
              for name in {m.key for m in metrics} if name in present
              for point in client.get_metric_history(run_id, name)}
    return [m for m in metrics if (m.key, m.step) not in logged]


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested document as one level, its keys joined by dots (MLflow's parameters)."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
