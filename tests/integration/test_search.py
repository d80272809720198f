"""What the search learns and promises (issue 10), on real Ray, Optuna and MLflow.

- A diverged trial reaches the sampler as the study's worst result (``diverged_as: worst``):
  on DeepOBS's quadratic with the learning rate searched over DeepOBS's [1e-5, 1e2], TPE
  wastes fewer trials on divergent rates after its start-up trials than when the trial is a
  FAIL it cannot see, and finds a better rate with the same seed and budget.
- The learning-rate range test lowers the upper end of ``lr`` to just above the quadratic's
  stability edge 2/λ_max, and says so in the study, MLflow and the report.
- ``reproducible: true`` gives the same trials, trial by trial, with two workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from tuner import parse_job
from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.results import JobOutcome
from workers.tasks.quadratic import stability_edge

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

#: DeepOBS's protocol on quadratic_deep: the rate alone is tuned, over [1e-5, 1e2].
WIDE_SGD = {"lr": {"low": 1.0e-5, "high": 1.0e+2}, "batch_size": {"choices": [128]},
            "weight_decay": {"choices": [0.0]}, "lr_decay": {"choices": [0.0]}}
STARTUP = 5  # TPE's random start-up trials (tuner.engine.studies), after trial 0 (the defaults)


def run(document: dict[str, Any]) -> tuple[int, Any, JobOutcome]:
    settings = get_settings()
    spec = parse_job(document)
    job_id = create_local_job(settings, spec)
    return job_id, spec, run_job(settings, job_id, spec)


def study(job_id: int, name: str) -> optuna.Study:
    return optuna.load_study(study_name=f"job-{job_id}-{name}",
                             storage=get_settings().database_url)


def value(trial: optuna.trial.FrozenTrial) -> float:
    """A finished trial's value."""
    assert trial.value is not None, trial.number
    return trial.value


def quadratic_job(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "task": "quadratic-deep", "optimizers": ["minibatch"],
            "trials": 16, "epochs": 2, "metric": "val_loss", "mode": "min", "sampler": "tpe",
            "seed": 0, "final_seeds": 0, "max_concurrent": 1,
            "space_overrides": {"minibatch": WIDE_SGD}, **extra}


def test_the_sampler_learns_where_the_rate_diverges() -> None:
    found: dict[str, dict[str, Any]] = {}
    for told in ("fail", "worst"):
        job_id, _, outcome = run(quadratic_job(f"diverge-{told}", diverged_as=told))
        records = sorted(outcome.results["minibatch"].trials, key=lambda t: t.number)
        after = [t for t in records if t.number > STARTUP]
        found[told] = {
            "diverged_after_startup": sum(t.state == "DIVERGED" for t in after),
            "best": outcome.results["minibatch"].best_value,
            "job": job_id,
        }

    assert found["worst"]["diverged_after_startup"] < found["fail"]["diverged_after_startup"], \
        found
    assert found["worst"]["best"] < found["fail"]["best"], found

    # What Optuna holds: a diverged trial is a COMPLETE result at the study's worst value...
    trials = study(found["worst"]["job"], "minibatch").get_trials(deepcopy=False)
    diverged = [t for t in trials if t.user_attrs["tuner_state"] == "DIVERGED"]
    complete = [t for t in trials if t.user_attrs["tuner_state"] == "COMPLETE"]
    assert diverged and complete
    for t in diverged:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == t.user_attrs["penalty"]
            earlier = [value(u) for u in complete if u.number < t.number]
            assert value(t) >= max(earlier, default=value(t))
    # ... that is never the best, and stays DIVERGED in MLflow and in the counts.
    best = min(complete, key=value)
    outcome_best = outcome.results["minibatch"]
    assert outcome_best.best_trial == best.number
    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    runs = client.search_runs(
        [outcome.experiment_id], filter_string="tags.`tuner.level` = 'trial'", max_results=100)
    states = {int(r.data.tags["tuner.trial"]): r.data.tags["tuner.state"] for r in runs}
    assert {n for n, s in states.items() if s == "DIVERGED"} == {t.number for t in diverged}
    assert outcome.progress.optimizers["minibatch"].diverged == len(diverged)


def test_a_diverged_trial_raises_the_pruners_bar_not_lowers_it() -> None:
    job_id, _, outcome = run(quadratic_job("diverge-median", pruner="median", trials=10,
                                           epochs=4))

    for t in study(job_id, "minibatch").get_trials(deepcopy=False):
        if t.user_attrs.get("tuner_state") == "DIVERGED" and "penalty" in t.user_attrs:
            # From its divergence to the budget, every step carries the worst value.
            assert max(t.intermediate_values) == 4
            last_finite = [s for s, v in t.intermediate_values.items()
                           if v != t.user_attrs["penalty"]]
            assert all(v == t.user_attrs["penalty"] for s, v in t.intermediate_values.items()
                       if s > max(last_finite, default=0))


def test_the_lr_range_test_narrows_lr_to_just_above_the_stability_edge(tmp_path: Path) -> None:
    job_id, spec, outcome = run(quadratic_job("range", trials=4, epochs=1, lr_range_test=True))

    found = outcome.lr_range["minibatch"]
    edge = stability_edge()  # 2 / lambda_max ~ 0.034 for plain SGD on this quadratic
    assert edge < found["blowup_lr"] < 10 * edge
    assert found["searched_high"] == found["blowup_lr"]
    assert found["low"] == 1.0e-5 and found["high"] == 1.0e+2
    # The study searched the narrowed range, and keeps what the test found.
    trials = study(job_id, "minibatch").get_trials(deepcopy=False)
    assert all(t.params["lr"] <= found["searched_high"] for t in trials)
    assert study(job_id, "minibatch").user_attrs["tuner.lr_range"]["blowup_lr"] == \
        found["blowup_lr"]
    # The MLflow job run and the report say so.
    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    params = client.get_run(outcome.job_run_id).data.params
    assert params["lr_range.minibatch"].startswith("swept [1e-05, 100], blew up at ")
    assert outcome.phases["lr_range"] <= outcome.phases["first_trial"]
    settings = get_settings()
    from tuner import store

    with store.session_scope(settings.database_url) as session:
        result = store.get_job(session, job_id).result
    assert result is not None
    assert result["lr_range"]["minibatch"]["searched_high"] == found["searched_high"]
    report = Path(result["report_path"])
    assert (report.parent / "lr_range.png").stat().st_size > 10_000
    assert "learning-rate range test" in report.read_text()


def test_reproducible_parallel_runs_give_the_same_trials() -> None:
    document = {"name": "repro", "task": "digits-logreg", "optimizers": ["adam", "sgd"],
                "trials": 8, "epochs": 2, "sampler": "tpe", "pruner": "median", "seed": 3,
                "final_seeds": 1, "max_concurrent": 2, "reproducible": True}

    seen = []
    for _ in range(2):
        job_id, spec, outcome = run(document)
        seen.append((
            {name: [(t.number, t.params, t.value, t.user_attrs["tuner_state"])
                    for t in study(job_id, name).get_trials(deepcopy=False)]
             for name in spec.optimizers},
            [(row["optimizer"], row["best"], row["finals"]) for row in outcome.leaderboard],
        ))

    (trials_a, board_a), (trials_b, board_b) = seen
    for name in ("adam", "sgd"):
        assert trials_a[name] == trials_b[name], name
    assert board_a == board_b
