"""Every sampler and pruner a job file may name, and ``timeout_s``, on real Ray and Optuna."""

from __future__ import annotations

import optuna
import pytest

from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.engine.studies import make_pruner, make_sampler
from tuner.spec import PRUNERS, SAMPLERS, parse_job

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

BASE = {"task": "digits-logreg", "optimizers": ["adam"], "epochs": 2, "final_seeds": 0,
        "max_concurrent": 2}


def _study(job_id: int, optimizer: str = "adam") -> optuna.Study:
    return optuna.load_study(study_name=f"job-{job_id}-{optimizer}",
                             storage=get_settings().database_url)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_the_whole_budget(sampler: str) -> None:
    spec = parse_job({**BASE, "name": f"s-{sampler}", "sampler": sampler, "trials": 7})
    settings = get_settings()
    job_id = create_local_job(settings, spec)

    outcome = run_job(settings, job_id, spec)

    study = _study(job_id)
    assert study.user_attrs["tuner.sampler"] == type(make_sampler(spec)).__name__
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 7
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # Trial 0 is the library defaults; the sampler chose the others, all different.
    assert trials[0].params["lr"] == pytest.approx(1e-3)
    assert len({t.params["lr"] for t in trials}) == 7
    assert outcome.progress.optimizers["adam"].complete == 7


@pytest.mark.parametrize("pruner", [p for p in PRUNERS if p != "none"])
def test_every_pruner_stops_bad_trials_between_epochs(pruner: str) -> None:
    # Learning rates from 1e-5 (hopeless in 8 epochs) to 1: enough bad trials to prune.
    spec = parse_job({**BASE, "name": f"p-{pruner}", "pruner": pruner, "trials": 16,
                      "epochs": 8, "sampler": "random", "max_concurrent": 1})
    settings = get_settings()
    job_id = create_local_job(settings, spec)

    outcome = run_job(settings, job_id, spec)

    study = _study(job_id)
    assert study.user_attrs["tuner.pruner"] == type(make_pruner(spec)).__name__
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(trials) == 16 and pruned
    for t in pruned:  # stopped between epochs, with what it had reported so far
        assert 1 <= len(t.intermediate_values) < 8
    progress = outcome.progress.optimizers["adam"]
    assert (progress.complete, progress.pruned) == (16 - len(pruned), len(pruned))


def test_timeout_stops_the_search_and_still_re_runs_the_best() -> None:
    # Fast trials (one epoch of the logistic regression), so that some complete within the
    # 15 s even on a busy machine; 500 of them take far longer.
    spec = parse_job({**BASE, "name": "timeout", "task": "digits-logreg", "trials": 500,
                      "epochs": 1, "final_seeds": 2, "timeout_s": 15})
    settings = get_settings()
    job_id = create_local_job(settings, spec)

    outcome = run_job(settings, job_id, spec)

    trials = _study(job_id).get_trials(deepcopy=False)
    assert 0 < len(trials) < 500
    assert all(t.state.is_finished() for t in trials)
    stopped = [t for t in trials if "timeout_s" in t.user_attrs.get("reason", "")]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in stopped)
    progress = outcome.progress.optimizers["adam"]
    assert progress.finished == len(trials)
    assert progress.final_done == 2  # the final re-runs are not cut by the timeout
    assert outcome.export["optimizers"]["adam"]["score"]["seeds"] == 2


def test_time_to_target_is_recorded_per_trial_and_per_final_run() -> None:
    from mlflow import MlflowClient

    spec = parse_job({**BASE, "name": "target", "trials": 3, "epochs": 6, "final_seeds": 2,
                      "metric": "val_accuracy", "mode": "max", "target": 0.5,
                      "space_overrides": {"adam": {"lr": {"choices": [0.05]}}}})
    settings = get_settings()
    job_id = create_local_job(settings, spec)

    outcome = run_job(settings, job_id, spec)

    records = outcome.results["adam"].trials
    assert all(r.target_epoch is not None and 1 <= r.target_epoch <= 6 for r in records)
    for r in records:  # the first epoch whose val_accuracy reaches 0.5
        assert r.target_epoch is not None and r.target_seconds is not None
        assert r.curve[r.target_epoch - 1] >= 0.5
        assert all(v < 0.5 for v in r.curve[: r.target_epoch - 1])
        assert 0 < r.target_seconds <= r.seconds
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    runs = [run for run in client.search_runs([outcome.experiment_id])
            if run.data.tags["tuner.level"] in ("trial", "final")]
    assert len(runs) == 3 + 2
    assert all(1 <= run.data.metrics["epoch_at_target"] <= 6 for run in runs)
    row = outcome.leaderboard[0]
    assert row["target_reached"] == "2/2" and 1 <= row["target_epoch"] <= 6


def test_the_problem_instance_is_stored_with_the_result() -> None:
    from tuner import store

    settings = get_settings()
    digests = {}
    for task in ("digits-logreg", "digits-mlp", "rosenbrock"):
        spec = parse_job({**BASE, "name": task, "task": task, "trials": 1, "epochs": 1})
        job_id = create_local_job(settings, spec)
        outcome = run_job(settings, job_id, spec)
        with store.session_scope(settings.database_url) as session:
            result = store.get_job(session, job_id).result
        assert result is not None
        problem = result["problem"]
        assert problem == outcome.problem
        assert problem["task"] == task and len(problem["data_sha256"]) == 64
        digests[task] = problem["data_sha256"]
    # The digits tasks share their data and split; the landscape has its own.
    assert digests["digits-logreg"] == digests["digits-mlp"] != digests["rosenbrock"]
    assert outcome.problem["train_size"] == 64
