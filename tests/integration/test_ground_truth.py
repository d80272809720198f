"""Ground truth (issue 4.5): tuned optimizers against answers known without tuner.

- On the convex digits logistic regression, the tuned optimizers come within two points of
  scikit-learn's ``LogisticRegression`` on the very same split and scaling.
- On Rosenbrock the best optimizer ends within 1e-3 of the minimum at (1, 1).
- The same job with the same seed (CPU, one trial at a time) gives the same trials twice.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.spec import parse_job

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

LOGREG: dict[str, Any] = {
    "name": "ground-truth-logreg", "task": "digits-logreg", "optimizers": ["adam", "momentum"],
    "trials": 12, "epochs": 30, "metric": "val_accuracy", "mode": "max", "pruner": "median",
    "final_seeds": 3, "max_concurrent": 2, "seed": 0,
}

# One example per batch: an epoch is 64 identical full-gradient steps (the landscape's batch
# size only sets the steps per epoch), 30 epochs are 1,920 steps. Adam's betas and eps stay
# at their defaults and the rate is constant: Adam from (-1.2, 1) with lr 0.02-0.3 reaches
# (1, 1) within ~2,000 steps; heavy-ball momentum 0.9 with lr ~1e-3 within ~2,500.
ROSENBROCK: dict[str, Any] = {
    "name": "ground-truth-rosenbrock", "task": "rosenbrock", "optimizers": ["adam", "momentum"],
    "trials": 6, "epochs": 30, "metric": "val_distance", "mode": "min", "pruner": "none",
    "final_seeds": 2, "max_concurrent": 1, "seed": 0,
    "space_overrides": {
        "adam": {"batch_size": {"choices": [1]}, "lr": {"low": 0.02, "high": 0.3},
                 "beta1": {"choices": [0.9]}, "beta2": {"choices": [0.999]},
                 "eps": {"choices": [1.0e-8]}, "weight_decay": {"choices": [0.0]},
                 "lr_decay": {"choices": [0.0]}},
        "momentum": {"batch_size": {"choices": [1]}, "lr": {"low": 1.0e-4, "high": 2.0e-3},
                     "momentum": {"choices": [0.9]}, "weight_decay": {"choices": [0.0]},
                     "lr_decay": {"choices": [0.0]}},
    },
}


def run(document: dict[str, Any]) -> tuple[int, Any]:
    settings = get_settings()
    spec = parse_job(document)
    job_id = create_local_job(settings, spec)
    return job_id, run_job(settings, job_id, spec)


def trials_of(job_id: int, optimizers: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    url = get_settings().database_url
    return {
        name: [(t.number, t.params, t.value, t.state.name)
               for t in optuna.load_study(study_name=f"job-{job_id}-{name}",
                                          storage=url).get_trials(deepcopy=False)]
        for name in optimizers
    }


def test_tuned_optimizers_match_scikit_learn_on_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    from workers.tasks.digits import digits_split

    X_train, y_train, X_val, y_val = digits_split()  # the tasks' split, pixels scaled by /16
    reference = LogisticRegression(max_iter=5000).fit(X_train, y_train).score(X_val, y_val)

    _, outcome = run(LOGREG)

    rows = {row["optimizer"]: row for row in outcome.leaderboard}
    for name in LOGREG["optimizers"]:
        row = rows[name]
        assert row["seeds"] == 3, row
        # Two points (0.02) of accuracy: the mean over the final re-runs, not a lucky trial.
        assert row["mean"] >= reference - 0.02, (name, row["mean"], reference)
        assert row["best"] >= reference - 0.02, (name, row["best"], reference)


def test_rosenbrock_minimum_is_reached_and_the_same_seed_gives_the_same_trials() -> None:
    first_id, first = run(ROSENBROCK)
    second_id, second = run(ROSENBROCK)

    leader = first.leaderboard[0]
    assert leader["best"] < 1e-3, leader
    assert leader["mean"] < 1e-3 and max(leader["finals"]) < 1e-3, leader
    final_position = first.results[leader["optimizer"]].finals[0].epochs[-1]["position"]
    assert abs(final_position[0] - 1.0) < 1e-3 and abs(final_position[1] - 1.0) < 1e-3

    assert trials_of(first_id, ROSENBROCK["optimizers"]) == \
        trials_of(second_id, ROSENBROCK["optimizers"])
    assert [(r["optimizer"], r["best"], r["finals"]) for r in first.leaderboard] == \
        [(r["optimizer"], r["best"], r["finals"]) for r in second.leaderboard]
