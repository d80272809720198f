"""Statistics of a job (tuner.analysis.statistics): summaries, Welch's test, time to target,
the ranking."""

from __future__ import annotations

import math
from typing import Any

import pytest
from scipy import stats

import search_spaces
from tuner.analysis.statistics import ALPHA, first_epoch_at, holm, leaderboard, summarize, welch_p
from tuner.results import FinalRun, JobProgress, OptimizerProgress, OptimizerResult
from tuner.spec import parse_job

NAN, INF = float("nan"), float("inf")

# -- summarize ---------------------------------------------------------------------------------


def test_summarize_three_values() -> None:
    summary = summarize([1.0, 2.0, 3.0])

    assert summary == {
        "mean": 2.0,
        "std": 1.0,
        "ci95": pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3)),
        "min": 1.0,
        "max": 3.0,
        "n": 3,
    }
    assert summary["ci95"] == pytest.approx(2.4841377117503303)


def test_summarize_ignores_nan_inf_and_none() -> None:
    assert summarize([1.0, NAN, None, INF, -INF, 3.0]) == summarize([1.0, 3.0])  # type: ignore[list-item]
    assert summarize([1.0, 3.0])["n"] == 2


def test_summarize_one_value_has_no_interval() -> None:
    assert summarize([0.5]) == {"mean": 0.5, "std": 0.0, "ci95": None, "min": 0.5, "max": 0.5,
                                "n": 1}


def test_summarize_nothing() -> None:
    empty = {"mean": None, "std": None, "ci95": None, "min": None, "max": None, "n": 0}
    assert summarize([]) == empty
    assert summarize([NAN, INF]) == empty


# -- welch_p -----------------------------------------------------------------------------------


def test_welch_p_is_scipys_unequal_variance_t_test() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 7.0]

    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p(a, b) == pytest.approx(0.041914517471454034)
    assert welch_p(a, b) == welch_p(b, a)


def test_welch_p_needs_two_finite_values_a_side() -> None:
    assert welch_p([1.0], [1.0, 2.0]) is None
    assert welch_p([1.0, 2.0], []) is None
    assert welch_p([1.0, NAN], [1.0, 2.0]) is None


def test_welch_p_of_constant_samples() -> None:
    # scipy answers NaN on zero variance; equal constants are tied, different ones are not.
    assert welch_p([0.5, 0.5], [0.5, 0.5, 0.5]) == 1.0
    assert welch_p([0.5, 0.5], [0.7, 0.7]) == 0.0


def test_welch_p_of_identical_samples_is_one() -> None:
    assert welch_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


# -- first_epoch_at ----------------------------------------------------------------------------


def epochs(values: list[float], metric: str = "val_loss") -> list[dict[str, Any]]:
    return [{"epoch": i, "metrics": {metric: v}} for i, v in enumerate(values, start=1)]


def test_first_epoch_at_in_min_mode() -> None:
    history = epochs([0.9, 0.5, 0.3, 0.2])

    assert first_epoch_at(history, "val_loss", 0.5, "min") == 2  # <= target counts
    assert first_epoch_at(history, "val_loss", 0.25, "min") == 4
    assert first_epoch_at(history, "val_loss", 0.1, "min") is None


def test_first_epoch_at_in_max_mode() -> None:
    history = epochs([0.2, 0.8, 0.95, 0.97], metric="val_accuracy")

    assert first_epoch_at(history, "val_accuracy", 0.95, "max") == 3
    assert first_epoch_at(history, "val_accuracy", 0.99, "max") is None


def test_first_epoch_at_skips_nan_inf_and_missing_metrics() -> None:
    history = [
        {"epoch": 1, "metrics": {"train_loss": 0.1}},
        {"epoch": 2, "metrics": {"val_loss": NAN}},
        {"epoch": 3, "metrics": {"val_loss": -INF}},
        {"epoch": 4, "metrics": {"val_loss": 0.05}},
    ]

    assert first_epoch_at(history, "val_loss", 0.1, "min") == 4
    assert first_epoch_at([], "val_loss", 0.1, "min") is None


# -- leaderboard -------------------------------------------------------------------------------


def make(
    mode: str,
    rows: dict[str, tuple[float | None, list[float | None]]],
    *,
    target: float | None = None,
    histories: dict[str, list[list[float]]] | None = None,
) -> list[dict[str, Any]]:
    """A leaderboard over real result objects: name -> (best trial value, final values)."""
    metric = "val_loss" if mode == "min" else "val_accuracy"
    spec = parse_job({"task": "digits-mlp", "optimizers": list(rows), "metric": metric,
                      "mode": mode, "final_seeds": 3, "target": target})
    progress = JobProgress(job_id=1, metric=metric, mode=mode)
    results = {}
    for name, (best, finals) in rows.items():
        space = search_spaces.load(name)
        result = OptimizerResult(name=name, space=space)
        if best is not None:
            params = space.defaults(train_size=1437)
            result.best_value, result.best_trial = best, 2
            result.hyperparameters = space.hyperparameters(params, train_size=1437)
            result.config = space.optimizer_config(params, train_size=1437).to_dict()
        hist = (histories or {}).get(name) or [[] for _ in finals]
        result.finals = [
            FinalRun(seed=42 + i, value=v, state="COMPLETE" if v is not None else "DIVERGED",
                     epochs=epochs(h, metric))
            for i, (v, h) in enumerate(zip(finals, hist, strict=True))
        ]
        results[name] = result
        progress.optimizers[name] = OptimizerProgress(name=name, budget=4, complete=3,
                                                      pruned=1)
    return leaderboard(spec, results, progress)


def test_min_mode_ranks_the_lowest_final_mean_first() -> None:
    board = make("min", {"sgd": (0.30, [0.40, 0.42, 0.41]),
                         "adam": (0.20, [0.21, 0.22, 0.20]),
                         "rmsprop": (0.25, [0.27, 0.26, 0.28])})

    assert [row["optimizer"] for row in board] == ["adam", "rmsprop", "sgd"]
    assert [row["rank"] for row in board] == [1, 2, 3]
    leader = board[0]
    assert leader["mean"] == pytest.approx(0.21) and leader["seeds"] == 3
    assert leader["p_vs_leader"] is None and leader["tied_with_leader"] is None
    assert leader["lr"] == 0.001 and leader["batch_size"] == 64
    assert (leader["complete"], leader["pruned"], leader["diverged"], leader["failed"]) == (
        3, 1, 0, 0)
    raw = [welch_p(row["finals"], leader["finals"]) for row in board[1:]]
    assert [row["p_raw"] for row in board[1:]] == pytest.approx(raw)
    assert [row["p_vs_leader"] for row in board[1:]] == pytest.approx(holm(raw))
    for row in board[1:]:
        assert row["tied_with_leader"] is (row["p_vs_leader"] >= ALPHA)
    assert board[2]["tied_with_leader"] is False


def test_max_mode_ranks_the_highest_final_mean_first() -> None:
    board = make("max", {"sgd": (0.90, [0.88, 0.89, 0.90]),
                         "adam": (0.97, [0.96, 0.97, 0.95])})

    assert [row["optimizer"] for row in board] == ["adam", "sgd"]


def test_the_final_mean_ranks_not_the_best_trial() -> None:
    # sgd's single lucky trial is better, but its re-runs are worse (selection bias).
    board = make("min", {"sgd": (0.10, [0.40, 0.41, 0.42]), "adam": (0.20, [0.21, 0.22, 0.23])})

    assert [row["optimizer"] for row in board] == ["adam", "sgd"]


def test_without_final_runs_the_best_trial_ranks() -> None:
    board = make("max", {"sgd": (0.91, []), "adam": (0.95, []), "nag": (0.93, [])})

    assert [row["optimizer"] for row in board] == ["adam", "nag", "sgd"]
    assert all(row["mean"] is None and row["seeds"] == 0 for row in board)
    assert [row["p_vs_leader"] for row in board] == [None, None, None]


def test_an_optimizer_without_a_completed_trial_comes_last_in_both_modes() -> None:
    for mode in ("min", "max"):
        board = make(mode, {"gd": (None, []), "sgd": (0.5, [0.5, 0.6]), "adam": (0.4, [])})

        assert board[-1]["optimizer"] == "gd"
        assert board[-1]["best"] is None and board[-1]["mean"] is None


def test_diverged_final_runs_are_counted_not_averaged() -> None:
    board = make("min", {"adam": (0.2, [0.21, None, 0.23])})

    (row,) = board
    assert row["finals"] == [0.21, 0.23]
    assert row["seeds"] == 2
    assert row["finals_diverged"] == 1
    assert row["mean"] == pytest.approx(0.22)


def test_an_optimizer_whose_final_runs_all_diverged_does_not_lead() -> None:
    # adam's best trial looks best, but all three re-runs of it diverged; sgd re-ran fine.
    # Ranking adam by its single best trial while sgd is ranked by its re-runs compares a
    # selected maximum with a mean: adam must not lead.
    board = make("min", {"sgd": (0.29, [0.30, 0.31, 0.30]), "adam": (0.25, [None, None, None])})

    assert [row["optimizer"] for row in board] == ["sgd", "adam"]


def test_a_diverged_final_run_ranks_after_re_runs_that_all_completed() -> None:
    # adam's one surviving re-run is the best mean, but two of its three re-runs diverged:
    # a failure counts (docs/reference.md, protocol point 2), it is not dropped.
    board = make("min", {"sgd": (0.29, [0.30, 0.31, 0.30]), "adam": (0.2, [0.1, None, None])})

    assert [row["optimizer"] for row in board] == ["sgd", "adam"]
    assert [row["finals_failed"] for row in board] == [0, 2]
    assert board[1]["mean"] == 0.1 and board[1]["seeds"] == 1


def test_target_epoch_is_the_median_over_the_final_runs() -> None:
    board = make(
        "max",
        {"adam": (0.97, [0.96, 0.97, 0.95])},
        target=0.9,
        histories={"adam": [[0.5, 0.91, 0.96], [0.92, 0.95, 0.97], [0.5, 0.6, 0.95]]},
    )

    (row,) = board
    assert row["target_epoch"] == 2  # reached at epochs 2, 1, 3
    assert row["target_reached"] == "3/3"


def test_target_never_reached() -> None:
    board = make("min", {"adam": (0.2, [0.21, 0.22])}, target=0.01,
                 histories={"adam": [[0.5, 0.21], [0.4, 0.22]]})

    assert board[0]["target_epoch"] is None
    assert board[0]["target_reached"] == "0/2"


def test_no_target_no_target_columns() -> None:
    board = make("min", {"adam": (0.2, [0.21, 0.22])})

    assert "target_epoch" not in board[0] and "target_reached" not in board[0]


def test_holm_adjusts_step_down_and_keeps_the_order() -> None:
    # Holm (1979): sorted p = 0.01, 0.03, 0.04 with m = 3 -> 0.03, max(0.03, 0.06), max(0.06,
    # 0.04); None is no test and takes no part in m.
    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == [] and holm([None]) == [None]


def test_holm_turns_a_chance_worse_into_a_tie_where_the_raw_test_would_not() -> None:
    # Four optimizers against the leader: the third is "worse" at p ~ 0.037 uncorrected, but
    # with three comparisons Holm multiplies the smallest-but-one p by 2 and the verdict is a
    # tie; the clearly worse one stays worse.
    board = make("min", {"adam": (0.20, [0.200, 0.202, 0.198, 0.201, 0.199]),
                         "nadam": (0.21, [0.199, 0.203, 0.205, 0.200, 0.202]),
                         "rmsprop": (0.22, [0.202, 0.204, 0.200, 0.205, 0.203]),
                         "sgd": (0.30, [0.30, 0.31, 0.32, 0.30, 0.31])})
    rows = {row["optimizer"]: row for row in board}

    assert board[0]["optimizer"] == "adam"
    raw, adjusted = rows["rmsprop"]["p_raw"], rows["rmsprop"]["p_vs_leader"]
    assert raw < ALPHA <= adjusted  # uncorrected: worse; Holm: tied
    assert rows["rmsprop"]["tied_with_leader"] is True
    assert rows["sgd"]["p_vs_leader"] < ALPHA and rows["sgd"]["tied_with_leader"] is False
