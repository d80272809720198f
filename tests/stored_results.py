"""A small stored job result, written the way ``tuner.engine.jobs`` stores one: two optimizers
(``sgd``, ``adam``) of four trials each and three final re-runs, enough for the report's
facts and plots without running a job."""

from __future__ import annotations

from typing import Any

__all__ = ["stored_optimizers"]


def _trial(number: int, state: str, value: float | None, lr: float) -> dict[str, Any]:
    curve = [] if value is None else [round(value - 0.1, 4), value]
    return {"number": number, "state": state, "value": value, "hyperparameters": {"lr": lr},
            "epochs": len(curve), "seconds": 0.5 * len(curve), "curve": curve,
            "finished_at": float(number)}


def _optimizer(trials: list[tuple[str, float | None, float]],
               finals: list[float]) -> dict[str, Any]:
    records = [_trial(i, state, value, lr) for i, (state, value, lr) in enumerate(trials)]
    best = max((t for t in records if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    return {
        "best_value": best["value"], "best_trial": best["number"],
        "hyperparameters": best["hyperparameters"], "config": {"class": "SGD", "kwargs": {}},
        "space": {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}}},
        "best_curves": {"val_accuracy": [0.9, best["value"]], "seconds": [0.5, 0.5]},
        "trials": records,
        "finals": [{"seed": 42 + i, "value": v, "state": "COMPLETE",
                    "curves": {"val_accuracy": [round(v - 0.05, 4), v], "seconds": [0.5, 0.6]}}
                   for i, v in enumerate(finals)],
    }


def stored_optimizers() -> dict[str, Any]:
    """``Job.result["optimizers"]``: sgd's trials 3 complete and 1 pruned; adam's 2 complete
    and 2 diverged (half of them: the report warns of it). Final re-runs reach 0.95 at their
    second epoch, after 1.1 training seconds."""
    return {
        "sgd": _optimizer([("COMPLETE", 0.95, 0.1), ("COMPLETE", 0.975, 0.27),
                           ("PRUNED", 0.5, 0.9), ("COMPLETE", 0.97, 0.3)],
                          [0.97, 0.975, 0.977]),
        "adam": _optimizer([("COMPLETE", 0.96, 0.035), ("DIVERGED", None, 0.9),
                            ("COMPLETE", 0.93, 0.01), ("DIVERGED", None, 0.8)],
                           [0.94, 0.96, 0.98]),
    }
