"""The report's statistics (tuner.analysis.report) and figures (tuner.analysis.plots) on
hand-made results.

Both are pure functions over a job's stored ``result``; the dicts here have its exact shape
(see tuner.results.OptimizerResult.to_dict and tuner.engine.jobs.run_job) and are read as
tuner reads them, ``tuner.results.JobResult.from_dict``. A real job's report
is tested in tests/integration/test_report.py.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from tuner.analysis import plots, report, statistics
from tuner.results import (
    Curves,
    JobResult,
    LeaderboardRow,
    StoredFinal,
    StoredOptimizer,
    StoredTrial,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

LR_SPACE = {"type": "float", "low": 1e-4, "high": 1.0, "log": True}


def _space(name: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "lr": dict(LR_SPACE),
        "batch_size": {"type": "categorical", "choices": [32, 64]},
        "lr_decay": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    }
    if name == "momentum":
        params["momentum"] = {"type": "float", "low": 5e-3, "high": 0.5, "log": True,
                              "one_minus": True}
    return {"name": name, "description": name, "class": "SGD", "params": params}


def _optimizer(name: str, *, quality: float, seed: int, epochs: int = 10,
               trials: int = 12, landscape: bool = False) -> dict[str, Any]:
    """An optimizer's stored result: ``quality`` is its final val_accuracy around the best lr."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for number in range(trials):
        lr = 10 ** rng.uniform(-4, 0)
        value: float | None = quality - 0.08 * abs(math.log10(lr) + 2) + rng.gauss(0, 0.005)
        state = "COMPLETE"
        if lr > 0.6:
            state, value = "DIVERGED", None
        elif number % 5 == 4:
            state = "PRUNED"
        curve = [value * (1 - 0.5 ** (e + 1)) if value else None for e in range(epochs)]
        records.append({
            "number": number, "state": state,
            "value": value if state == "COMPLETE" else None,
            "hyperparameters": {"lr": lr, "batch_size": 32, "lr_decay": 0.01},
            "epochs": epochs if state == "COMPLETE" else 3, "seconds": 0.2,
            "curve": curve if state == "COMPLETE" else curve[:3],
            "finished_at": float(number),
        })
    complete = [t for t in records if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    finals = []
    for i in range(3):
        final = best["value"] + rng.gauss(0, 0.004)
        curves: dict[str, Any] = {
            "val_accuracy": [final * (1 - 0.6 ** (e + 1)) for e in range(epochs)],
            "val_loss": [1.0 / (e + 1) for e in range(epochs)],
            "seconds": [0.05] * epochs,
        }
        if landscape:
            curves["position"] = [[-1.2 + 2.2 * (e + 1) / epochs, 1.0] for e in range(epochs)]
        finals.append({"seed": 42 + i, "value": final, "state": "COMPLETE", "curves": curves})
    return {
        "best_value": best["value"], "best_trial": best["number"],
        "hyperparameters": best["hyperparameters"], "config": {}, "space": _space(name),
        "best_curves": {"val_accuracy": best["curve"]}, "trials": records, "finals": finals,
    }


def _result(names: dict[str, float], *, landscape: bool = False) -> dict[str, Any]:
    optimizers = {name: _optimizer(name, quality=q, seed=i, landscape=landscape)
                  for i, (name, q) in enumerate(names.items())}
    board = []
    for name, o in optimizers.items():
        finals = [f["value"] for f in o["finals"]]
        stats = statistics.summarize(finals)
        board.append({"optimizer": name, "best": o["best_value"], "mean": stats["mean"],
                      "std": stats["std"], "ci95": stats["ci95"], "seeds": stats["n"],
                      "trial": o["best_trial"], "lr": o["hyperparameters"]["lr"],
                      "batch_size": 32, "complete": 8, "pruned": 2, "diverged": 2, "failed": 0,
                      "finals": finals})
    board.sort(key=lambda r: -r["mean"])
    for rank, row in enumerate(board, start=1):
        row["rank"] = rank
        p = statistics.welch_p(row["finals"], board[0]["finals"]) if rank > 1 else None
        row["p_vs_leader"], row["tied_with_leader"] = p, None if p is None else p >= 0.05
    return {"export": {"best": board[0]["optimizer"]}, "leaderboard": board, "seconds": 12.0,
            "optimizers": optimizers, "export_path": "/tmp/x.yaml"}


SPEC = {"name": "unit", "task": "digits-mlp", "optimizers": ["momentum", "adam", "sgd"],
        "trials": 12, "epochs": 10, "metric": "val_accuracy", "mode": "max", "sampler": "tpe",
        "pruner": "median", "seed": 0, "final_seeds": 3, "target": 0.9,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}, "max_concurrent": 2,
        "timeout_s": None, "space_overrides": {}}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    """A job's stored result, as the jobs table holds it (JSON)."""
    return _result({"momentum": 0.97, "adam": 0.93, "sgd": 0.95})


def _rows(rows: list[dict[str, Any]]) -> list[LeaderboardRow]:
    """Leaderboard rows, typed, from hand-made stored rows."""
    return [LeaderboardRow.from_dict(row) for row in rows]


def _assert_png(path: Path | None, *, min_bytes: int = 5_000) -> None:
    assert path is not None and path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


# -- statistics ------------------------------------------------------------------------------


def test_expected_best_matches_the_closed_form() -> None:
    scores = [0.3, 0.9, 0.5, 0.7, 0.1, 0.8]
    curve = statistics.expected_best(scores, mode="max", shuffles=4000, seed=1)
    assert curve["k"] == [1, 2, 3, 4, 5, 6]
    for k, mean in zip(curve["k"], curve["mean"], strict=True):
        exact = statistics.expected_best_exact(scores, k, mode="max")
        assert mean == pytest.approx(exact, abs=0.01)
    assert curve["mean"][0] == pytest.approx(sum(scores) / len(scores), abs=0.01)
    assert curve["mean"][-1] == pytest.approx(0.9)
    assert curve["low"][-1] == curve["high"][-1] == 0.9
    assert all(lo <= hi for lo, hi in zip(curve["low"], curve["high"], strict=True))
    # Monotone: more trials never give a worse expected best.
    assert all(a <= b + 1e-12 for a, b in zip(curve["mean"], curve["mean"][1:], strict=False))


def test_expected_best_minimizes_and_is_reproducible() -> None:
    scores = [3.0, 1.0, 2.0]
    a = statistics.expected_best(scores, mode="min", shuffles=1000, seed=0)
    b = statistics.expected_best(scores, mode="min", shuffles=1000, seed=0)
    assert a == b
    assert statistics.expected_best_exact(scores, 2, mode="min") == pytest.approx(4 / 3)
    assert a["mean"][-1] == 1.0
    assert statistics.expected_best([], mode="min")["k"] == []
    with pytest.raises(ValueError, match=r"`1 <= k <= n` must hold, but got \(k=4, n=3\)"):
        statistics.expected_best_exact(scores, 4, mode="min")


def test_failed_and_pruned_trials_score_the_worst_value() -> None:
    trials = [
        {"number": 2, "state": "DIVERGED", "value": None},
        {"number": 0, "state": "COMPLETE", "value": 0.5},
        {"number": 1, "state": "PRUNED", "value": None},
        {"number": 3, "state": "COMPLETE", "value": 0.2},
    ]
    typed = [StoredTrial.from_dict(t) for t in trials]
    assert statistics.trial_scores(typed, mode="min") == [0.5, 0.5, 0.5, 0.2]
    assert statistics.trial_scores(typed, mode="min", worst=9.0) == [0.5, 9.0, 9.0, 0.2]
    assert statistics.trial_scores(typed, mode="max") == [0.5, 0.2, 0.2, 0.2]
    shares = statistics.trial_shares(typed)
    assert (shares["complete"], shares["pruned"], shares["diverged"], shares["n"]) == (2, 1, 1, 4)
    assert shares["share_diverged"] == 0.25


def test_tunability_summaries() -> None:
    values = [0.5, 0.9, 0.95, 0.97, 0.96, 0.6, 0.7, 0.94]
    trials: list[dict[str, Any]] = [{"number": i, "state": "COMPLETE", "value": v}
                                    for i, v in enumerate(values)]
    t = statistics.tunability([StoredTrial.from_dict(x) for x in trials], mode="max",
                              shuffles=2000)
    assert t["best"] == 0.97 and t["n"] == 8
    assert t["expected_1"] == pytest.approx(sum(x["value"] for x in trials) / 8, abs=0.01)
    assert 1 < t["k_within_1pct"] <= 8
    # CPE weights early k (lower expected best), CPL late k.
    assert t["cpe"] < t["cpu"] < t["cpl"] <= t["best"]
    assert statistics.trials_to_within([0.5, 0.8, 0.995, 1.0], 1.0) == 3
    # Near 0 the tolerance is 1% of what tuning gained, not of the tiny best value.
    assert statistics.trials_to_within([2.0, 0.5, 0.01, 1e-7], 1e-7) == 3
    assert statistics.tunability([], mode="min")["best"] is None


def test_edge_warnings_name_the_parameter_range_and_fix() -> None:
    space = StoredOptimizer.from_dict({"space": _space("momentum")}).params
    assert statistics.edge_warnings("momentum", {"lr": 0.01, "momentum": 0.9}, space) == []
    [lr] = statistics.edge_warnings("momentum", {"lr": 0.9, "momentum": 0.9}, space)
    assert lr == ("momentum: the best lr=0.9 lies at the upper edge of its range [0.0001, 1]; "
                  "the optimum may lie outside it: widen it (space_overrides.momentum.lr)")
    # one_minus: q = 1 - 0.994 sits at the low end of q's range, the value's upper edge.
    [m] = statistics.edge_warnings("momentum", {"lr": 0.01, "momentum": 0.994}, space)
    assert "momentum=0.994 lies at the upper edge of its range [0.5, 0.995]" in m
    [low] = statistics.edge_warnings("momentum", {"lr": 1.1e-4}, space)
    assert "lower edge" in low
    # A constant schedule (lr_decay at its lower end) is no reason to widen anything.
    assert statistics.edge_warnings("momentum", {"lr": 0.01, "lr_decay": 1e-3}, space) == []
    assert statistics.edge_warnings("momentum", None, space) == []


def test_inclusion_warning_when_adam_is_clearly_worse_than_momentum() -> None:
    rows = [
        {"optimizer": "momentum", "mean": 0.97, "finals": [0.969, 0.970, 0.971, 0.972]},
        {"optimizer": "adam", "mean": 0.90, "finals": [0.899, 0.900, 0.901, 0.902]},
    ]
    [warning] = statistics.inclusion_warnings(_rows(rows), mode="max")
    assert warning.startswith(
        "adam is clearly worse than momentum (final mean 0.9 vs 0.97, Welch p=")
    assert "search space was too narrow" in warning
    # Tied (p >= 0.05) or better: no warning.
    rows[1]["finals"] = [0.90, 0.99, 0.95, 0.93]
    rows[1]["mean"] = 0.9425
    assert statistics.inclusion_warnings(_rows(rows), mode="max") == []
    assert statistics.inclusion_warnings(_rows(rows[:1]), mode="max") == []


def test_time_to_target_counts_never_as_budget_plus_one() -> None:
    finals = [
        {"curves": {"val_loss": [0.9, 0.4, 0.2], "seconds": [1.0, 1.0, 1.0]}},
        {"curves": {"val_loss": [0.9, 0.8, 0.25], "seconds": [1.0, 2.0, 3.0]}},
        {"curves": {"val_loss": [0.9, 0.8, 0.7], "seconds": [1.0, 1.0, 1.0]}},
    ]
    speed = statistics.time_to_target([StoredFinal.from_dict(f) for f in finals],
                                      metric="val_loss", target=0.3, mode="min", epochs=3)
    assert speed == {"epoch": 3, "seconds": 4.5, "reached": 2, "runs": 3}
    curve = Curves.from_dict({"val_loss": [None, math.nan, 0.5]})
    assert statistics.first_epoch_at(curve, "val_loss", 0.6, "min") == 3


def test_report_facts(result: dict[str, Any]) -> None:
    facts = statistics.report_facts(SPEC, result, shuffles=200)
    assert set(facts["optimizers"]) == {"momentum", "adam", "sgd"}
    f = facts["optimizers"]["momentum"]
    assert f["seeds"]["n"] == 3 and f["hyper"]["n"] >= 3
    assert f["seeds"]["std"] < f["hyper"]["std"]
    assert f["speed"]["runs"] == 3
    assert f["seconds_per_epoch"] == pytest.approx(0.05)
    assert facts["worst"] == min(t["value"] for o in result["optimizers"].values()
                                 for t in o["trials"] if t["value"] is not None)
    assert any("adam is clearly worse than momentum" in w for w in facts["warnings"])


# -- figures ---------------------------------------------------------------------------------


def test_colors_are_fixed_per_optimizer_across_jobs() -> None:
    a = plots.optimizer_colors(["adam", "sgd", "mine"])
    b = plots.optimizer_colors(["sgd", "theirs", "adam"])
    assert a["adam"] == b["adam"] and a["sgd"] == b["sgd"]
    assert len(set(plots.optimizer_colors(["gd", "sgd", "minibatch", "momentum", "nag",
                                           "rmsprop", "adam", "x", "y"]).values())) == 9
    assert plots.metric_label("val_loss", "min") == "val_loss (lower is better)"


def test_every_figure_is_a_png(tmp_path: Path, result: dict[str, Any]) -> None:
    typed = JobResult.from_dict(result)
    _assert_png(plots.plot_convergence(SPEC, typed, tmp_path / "c.png"))
    _assert_png(plots.plot_lr_sensitivity(SPEC, typed, tmp_path / "lr.png"))
    _assert_png(plots.plot_tunability(SPEC, typed, tmp_path / "t.png"))
    _assert_png(plots.plot_seed_sensitivity(SPEC, typed, tmp_path / "s.png"))
    assert plots.plot_landscape(SPEC, typed, tmp_path / "l.png") is None  # not a landscape


def test_landscape_path_on_the_rosenbrock_contour(tmp_path: Path) -> None:
    spec = {**SPEC, "task": "rosenbrock", "metric": "val_distance", "mode": "min",
            "target": None}
    result = JobResult.from_dict(_result({"adam": 0.97, "momentum": 0.95}, landscape=True))
    _assert_png(plots.plot_landscape(spec, result, tmp_path / "l.png"))
    assert plots.landscape_of("rastrigin") == "rastrigin"
    assert plots.landscape_of("workers.tasks.landscapes:rosenbrock") == "rosenbrock"
    assert plots.landscape_of("mypkg.tasks:rosenbrock") is None
    assert plots.landscape_of("digits-mlp") is None


def test_figures_without_data_are_skipped(tmp_path: Path) -> None:
    empty = {"leaderboard": [], "optimizers": {"adam": {
        "best_value": None, "best_trial": None, "hyperparameters": None, "space": _space("adam"),
        "best_curves": {}, "trials": [], "finals": []}}}
    typed = JobResult.from_dict(empty)
    assert plots.plot_convergence(SPEC, typed, tmp_path / "c.png") is None
    assert plots.plot_lr_sensitivity(SPEC, typed, tmp_path / "lr.png") is None
    assert plots.plot_tunability(SPEC, typed, tmp_path / "t.png") is None
    assert plots.plot_seed_sensitivity(SPEC, typed, tmp_path / "s.png") is None
    files = report.write_report(3, SPEC, empty, tmp_path / "r", storage_url=None)
    assert [f.name for f in files] == ["report.html"]
    html = files[0].read_text()
    assert "adam: no trial completed" in html
    assert "hyperparameter importance skipped" in html


def test_write_report_html(tmp_path: Path, result: dict[str, Any]) -> None:
    files = report.write_report(7, SPEC, result, tmp_path / "out", storage_url=None,
                                shuffles=200)
    names = [f.name for f in files]
    assert names == ["convergence.png", "lr_sensitivity.png", "tunability.png",
                     "seeds_vs_hyperparameters.png", "report.html"]
    html = (tmp_path / "out" / "report.html").read_text()
    for png in names[:-1]:
        assert f"<img src='{png}'" in html
    assert "<table>" in html and "momentum" in html
    assert "Welch&#x27;s two-sided t-test" in html
    assert "seeds 42–44" in html
    assert "adam is clearly worse than momentum" in html
    assert "torch " in html and "optuna " in html
    assert "metric: val_accuracy" in html  # the job spec as YAML
