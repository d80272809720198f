"""The stored result read back typed (tuner.results.JobResult.from_dict): what a job stores
round-trips, and a result stored by an older tuner (fields missing) still reads."""

from __future__ import annotations

import math

import search_spaces
from tuner.results import (
    Curves,
    FinalRun,
    JobResult,
    LandscapeInfo,
    LeaderboardRow,
    OptimizerResult,
    StoredTrial,
    TrialOutcome,
    TrialRecord,
)


def _epochs(values: list[float], *, position: bool = False) -> list[dict]:
    return [{"epoch": i, "metrics": {"val_loss": v, "train_loss": 2 * v}, "seconds": 0.5,
             **({"position": [v, -v]} if position else {})}
            for i, v in enumerate(values, start=1)]


def test_an_optimizer_result_round_trips_through_its_stored_json() -> None:
    result = OptimizerResult(name="adam", space=search_spaces.load("adam"), best_value=0.2,
                             best_trial=1, hyperparameters={"lr": 0.01})
    result.best_epochs = _epochs([0.5, 0.2], position=True)
    result.trials = [
        TrialRecord(number=1, state="COMPLETE", value=0.2, hyperparameters={"lr": 0.01},
                    epochs=2, seconds=1.0, curve=[0.5, 0.2], finished_at=3.0),
        TrialRecord(number=0, state="PRUNED", value=None, hyperparameters={"lr": 0.5},
                    epochs=1, seconds=0.5, curve=[0.9], finished_at=1.0),
    ]
    result.finals = [FinalRun(seed=42, value=0.21, state="COMPLETE", epochs=_epochs([0.4, 0.21])),
                     FinalRun(seed=43, value=None, state="DIVERGED", epochs=_epochs([math.nan]))]
    stored = JobResult.from_dict({"optimizers": {"adam": result.to_dict("val_loss")},
                                  "leaderboard": [{"optimizer": "adam", "rank": 1}]})

    adam = stored.optimizers["adam"]
    assert [t.number for t in adam.trials] == [0, 1]
    assert [t.state for t in adam.trials] == [TrialOutcome.PRUNED, TrialOutcome.COMPLETE]
    assert adam.complete_trials[0].value == 0.2 and adam.best_lr == 0.01
    assert adam.params["lr"].kind == "float" and adam.params["lr"].log
    assert adam.best_curves.positions == ((0.5, -0.5), (0.2, -0.2))
    assert [f.state for f in adam.finals] == [TrialOutcome.COMPLETE, TrialOutcome.DIVERGED]
    assert adam.finals[0].curves.of("val_loss") == (0.4, 0.21)
    assert adam.finals[0].curves.seconds == (0.5, 0.5)
    assert stored.ranked == ["adam"] and stored.leaderboard[0].rank == 1


def test_curves_read_the_epoch_reports_and_the_stored_form_alike() -> None:
    epochs = _epochs([0.5, 0.2], position=True)
    curves = Curves.from_epochs(epochs)

    assert Curves.from_dict(curves.to_dict()) == curves
    assert curves.to_dict() == {"val_loss": [0.5, 0.2], "train_loss": [1.0, 0.4],
                                "position": [[0.5, -0.5], [0.2, -0.2]], "seconds": [0.5, 0.5]}
    # A metric first reported after epoch 1 (a training loop's) is kept, None before.
    late = Curves.from_epochs([{"metrics": {"a": 1.0}}, {"metrics": {"a": 2.0, "b": 3.0}}])
    assert late.of("b") == (None, 3.0)


def test_an_older_result_without_the_newer_fields_still_reads() -> None:
    stored = JobResult.from_dict({
        "leaderboard": [{"optimizer": "sgd", "best": 0.9, "mean": None, "finals": [0.8, None]}],
        "optimizers": {"sgd": {"best_value": 0.9, "trials": [{"number": 0, "state": "ODD"}],
                               "finals": [{"seed": 42, "value": 0.8}]}},
    })

    assert stored.versions is None and stored.lr_range == {} and stored.landscape is None
    assert stored.seconds is None and stored.report_files == () and stored.best is None
    sgd = stored.optimizers["sgd"]
    assert sgd.trials[0] == StoredTrial(number=0, state=TrialOutcome.FAIL)
    assert sgd.finals[0].state is TrialOutcome.COMPLETE  # before final runs had a state
    assert sgd.params == {} and sgd.best_curves == Curves()
    row = stored.leaderboard[0]
    assert row.score == 0.9 and row.finals == (0.8,) and row.rank == 0
    assert JobResult.from_dict(None) == JobResult()


def test_a_leaderboard_row_without_a_target_stores_no_target_keys() -> None:
    row = LeaderboardRow(optimizer="adam", mean=0.2, finals=(0.2,), rank=1)
    assert "target_epoch" not in row.to_dict()
    with_target = LeaderboardRow(optimizer="adam", target_epoch=3, target_reached="2/3")
    assert with_target.to_dict()["target_reached"] == "2/3"
    assert LeaderboardRow.from_dict(with_target.to_dict()) == with_target


def test_a_landscape_hands_each_seeds_start() -> None:
    info = LandscapeInfo.from_dict({"function": "rosenbrock", "minimum": [1, 1],
                                    "start": [-1.2, 1], "limit": 3,
                                    "starts": {"42": [-1.19, 1.02]}})
    assert info is not None
    assert info.start_of(42) == (-1.19, 1.02)
    assert info.start_of(43) == info.start_of(None) == (-1.2, 1.0)
    assert LandscapeInfo.from_dict(info.to_dict()) == info
    assert LandscapeInfo.from_dict({"function": "rosenbrock"}) is None
