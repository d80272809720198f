"""Best optimizer settings out (YAML, JSON, Python) and back into ``torch.optim``.

The export file (docs/design.md)::

    job: 7
    task: digits-mlp
    metric: {name: val_loss, mode: min}
    best: adam
    optimizers:
      adam:
        class: torch.optim.Adam
        kwargs: {lr: 0.0012, betas: [0.9, 0.999], eps: 1.0e-08, weight_decay: 1.0e-05}
        batch_size: 64
        scheduler: {class: torch.optim.lr_scheduler.ExponentialLR, kwargs: {gamma: 0.97},
                    step: epoch}
        score: {best: 0.081, mean: 0.085, std: 0.004, seeds: 5}
        trial: 17
        mlflow_run_id: 3f2a...

``getattr(torch.optim, cls)(model.parameters(), **kwargs)`` works on it as it stands. The
scheduler's ``step`` says when tuner called ``scheduler.step()``: once per ``epoch``
(exponential decay) or after every optimizer step, per ``batch`` (warm-up + cosine, a
``SequentialLR`` whose ``schedulers`` are scheduler entries themselves).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.errors import TunerError
from tuner.results import LeaderboardRow

if TYPE_CHECKING:
    import torch

    from tuner.results import OptimizerResult
    from tuner.spec import JobSpec

__all__ = ["FORMATS", "build_export", "load_optimizer", "render_export"]

FORMATS = ("yaml", "json", "python")


def build_export(
    job_id: int,
    spec: JobSpec,
    results: Mapping[str, OptimizerResult],
    leaderboard: Sequence[LeaderboardRow | Mapping[str, Any]],
) -> dict[str, Any]:
    """The export document of a finished job, optimizers in leaderboard order (the rows of
    :func:`tuner.analysis.statistics.rank`, or their stored dicts)."""
    optimizers: dict[str, Any] = {}
    for stored in leaderboard:
        row = stored if isinstance(stored, LeaderboardRow) else LeaderboardRow.from_dict(stored)
        result = results[row.optimizer]
        if result.config is None:
            continue
        optimizers[row.optimizer] = {
            "class": result.config["class"],
            "kwargs": _rounded(result.config["kwargs"]),
            "batch_size": result.config["batch_size"],
            "scheduler": _rounded(result.config["scheduler"]),
            "score": _rounded({"best": row.best, "mean": row.mean, "std": row.std,
                               "seeds": row.seeds}),
            "trial": result.best_trial,
            "mlflow_run_id": result.best_run_id,
        }
    return {
        "job": job_id,
        "task": spec.task,
        "metric": {"name": spec.metric, "mode": spec.mode},
        "best": next(iter(optimizers), None),
        "optimizers": optimizers,
    }


def _rounded(value: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits: readable files, same training behaviour."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, digits) for v in value]
    return value


def render_export(document: Mapping[str, Any], fmt: str = "yaml") -> str:
    """The export as text: ``yaml``, ``json`` or ``python`` (a module of factories)."""
    if fmt == "yaml":
        return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=None)
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    if fmt == "python":
        return _python(document)
    raise TunerError(f"--format: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _python(document: Mapping[str, Any]) -> str:
    metric = document["metric"]
    lines = [
        f'"""Best optimizer settings of tuner job {document["job"]} on {document["task"]}',
        f'({metric["name"]}, {metric["mode"]}). Written by `tuner export`.',
        "",
        "    optimizer, scheduler = make_best(model.parameters())",
        '"""',
        "",
        "import torch",
        "",
        f"BEST = {document['best']!r}",
        "BATCH_SIZE = {",
        *(f"    {name!r}: {entry['batch_size']}," for name, entry in
          document["optimizers"].items()),
        "}",
        "",
    ]
    for name, entry in document["optimizers"].items():
        kwargs = ", ".join(f"{k}={_literal(v)}" for k, v in entry["kwargs"].items())
        score = entry.get("score") or {}
        lines += [
            "",
            f"def make_{_identifier(name)}(params):",
            f'    """{name}: {metric["name"]} best {score.get("best")}, mean '
            f'{score.get("mean")} over {score.get("seeds")} seeds '
            f'(trial {entry.get("trial")})."""',
            f"    optimizer = {entry['class']}(params, {kwargs})",
        ]
        scheduler = entry.get("scheduler")
        if scheduler:
            step = scheduler.get("step", "epoch")
            lines.append(f"    # call scheduler.step() once per {step}"
                         + (" (after every optimizer.step())" if step == "batch" else ""))
            lines.append(f"    scheduler = {_scheduler_call(scheduler)}")
        else:
            lines.append("    scheduler = None")
        lines += ["    return optimizer, scheduler", ""]
    if document["best"]:
        lines += ["", "def make_best(params):",
                  f"    return make_{_identifier(document['best'])}(params)", ""]
    return "\n".join(lines)


def _scheduler_call(scheduler: Mapping[str, Any]) -> str:
    """``torch.optim.lr_scheduler.X(optimizer, ...)``, nested schedulers written out."""
    parts = []
    for key, value in (scheduler.get("kwargs") or {}).items():
        if key == "schedulers":
            inner = ", ".join(_scheduler_call(s) for s in value)
            parts.append(f"schedulers=[{inner}]")
        elif key == "milestones":
            parts.append(f"milestones={list(value)!r}")
        else:
            parts.append(f"{key}={_literal(value)}")
    return f"{scheduler['class']}(optimizer, {', '.join(parts)})"


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    return repr(value)


def load_optimizer(
    source: str | Path | Mapping[str, Any],
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    *,
    optimizer: str | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Build the optimizer (and its LR schedule) of an export.

    Example::

        optimizer, scheduler = tuner.load_optimizer("best.yaml", model.parameters())

    Args:
        source: An export file (YAML or JSON), its parsed document, or one entry of its
            ``optimizers`` mapping.
        params: What the optimizer updates, as for any ``torch.optim`` class.
        optimizer: Which optimizer of the export; default: its ``best``.

    Returns:
        ``(optimizer, scheduler)``; ``scheduler`` is ``None`` for a constant learning rate.
        Step the scheduler as tuner did: its export entry's ``scheduler.step`` says ``epoch``
        (once per epoch: the exponential decay) or ``batch`` (after every ``optimizer.step()``:
        warm-up + cosine, sized for the job's epochs and batches per epoch).
    """
    from tuner.optim import build_optimizer

    if isinstance(source, str | Path):
        path = Path(source)
        try:
            text = path.read_text()
            # JSON first: YAML 1.1 reads JSON's 1e-08 as a string.
            document = (json.loads(text) if text.lstrip().startswith("{")
                        else yaml.safe_load(text))
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise TunerError(f"{path}: cannot read the export: {e}") from e
    else:
        document = dict(source)
    if "class" in document:
        entry = document
    else:
        entries = document.get("optimizers") or {}
        name = optimizer or document.get("best")
        if name not in entries:
            raise TunerError(
                f"optimizer {name!r} is not in the export; it has: {', '.join(entries) or 'none'}"
            )
        entry = entries[name]
    return build_optimizer(entry, params)
