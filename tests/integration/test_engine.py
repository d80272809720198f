"""Real jobs through the engine: Ray workers, Optuna studies, MLflow runs, the jobs table.

Each job is small (a few trials of a few epochs on the digits or a 2-D landscape) and runs
through the same path as ``tuner run``: ``create_local_job`` then ``run_job``. After each job
the invariants of docs/design.md are checked against the stores themselves, not the coordinator's
own counts: every trial ended in Optuna and in MLflow with the same number and state, the
tags say what each run is, and the jobs table agrees with Optuna.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tuner import TaskError, load_optimizer, parse_job, store
from tuner.config import Settings, get_settings
from tuner.engine.jobs import create_local_job, export_path, run_job
from tuner.results import JobOutcome, TrialOutcome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

FINISHED = {"COMPLETE", "PRUNED", "FAIL"}
SMALL = {
    "name": "small",
    "task": "digits-logreg",
    "optimizers": ["sgd", "adam"],
    "trials": 3,
    "epochs": 3,
    "final_seeds": 2,
    "max_concurrent": 2,
    "seed": 0,
}


def submit(document: dict[str, Any]) -> tuple[Settings, int, Any, JobOutcome]:
    settings = get_settings()
    spec = parse_job(document)
    job_id = create_local_job(settings, spec)
    return settings, job_id, spec, run_job(settings, job_id, spec)


def lost(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get("tuner_state") == "LOST"


def studies(settings: Settings, job_id: int, spec: Any) -> dict[str, optuna.Study]:
    return {
        name: optuna.load_study(study_name=f"job-{job_id}-{name}", storage=settings.database_url)
        for name in spec.optimizers
    }


def tuner_state(trial: optuna.trial.FrozenTrial) -> str:
    """The outcome tuner records (COMPLETE, PRUNED, DIVERGED, FAIL or LOST); Optuna's state
    says how the sampler saw it (a diverged trial is told as a result, see the ledger)."""
    return str(trial.user_attrs.get("tuner_state", trial.state.name))


def trial_value(trial: optuna.trial.FrozenTrial) -> float:
    """A complete trial's value."""
    assert trial.value is not None, trial.number
    return trial.value


def job_row(settings: Settings, job_id: int) -> Any:
    with store.session_scope(settings.database_url) as session:
        job = store.get_job(session, job_id)
        session.expunge(job)
        return job


def mlflow_runs(settings: Settings, job_id: int) -> tuple[MlflowClient, str, list[Any]]:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiments = [e for e in client.search_experiments(view_type=ViewType.ALL)
                   if e.tags.get("tuner.job") == str(job_id)]
    assert len(experiments) == 1, [e.name for e in experiments]
    (experiment,) = experiments
    runs = client.search_runs([experiment.experiment_id], max_results=5000,
                              run_view_type=ViewType.ALL)
    return client, experiment.experiment_id, runs


def check_invariants(settings: Settings, job_id: int, spec: Any,
                     outcome: JobOutcome | None = None) -> dict[str, list[Any]]:
    """Assert docs/design.md's invariants on a finished job; return its trials per optimizer."""
    # -- Optuna: every trial ended, the budget holds (lost trials do not count) ---------------
    trials = {name: study.get_trials(deepcopy=False)
              for name, study in studies(settings, job_id, spec).items()}
    for name, found in trials.items():
        assert {t.state.name for t in found} <= FINISHED, (name, [t.state for t in found])
        assert sum(not lost(t) for t in found) == spec.trials, name
        assert [t.number for t in found] == list(range(len(found)))

    # -- the jobs table agrees with Optuna -----------------------------------------------------
    job = job_row(settings, job_id)
    assert job.state == "succeeded", job.error
    progress = job.progress["optimizers"]
    for name, found in trials.items():
        states = Counter(tuner_state(t) for t in found if not lost(t))
        counts = progress[name]
        assert counts["complete"] == states["COMPLETE"], name
        assert counts["pruned"] == states["PRUNED"], name
        assert counts["diverged"] == states["DIVERGED"], name
        assert counts["failed"] == states["FAIL"], name
        assert counts["lost"] == sum(lost(t) for t in found), name
        assert counts["running"] == 0
        assert counts["finished"] == spec.trials

    # -- MLflow: one experiment, job -> optimizer -> trial/final, same numbers and states -----
    client, experiment_id, runs = mlflow_runs(settings, job_id)
    assert job.mlflow_experiment_id == experiment_id
    assert all(run.info.status != "RUNNING" for run in runs)
    by_level: dict[str, list[Any]] = {}
    for run in runs:
        by_level.setdefault(run.data.tags.get("tuner.level", "?"), []).append(run)
    assert set(by_level) <= {"job", "optimizer", "trial", "final"}
    (job_run,) = by_level["job"]
    assert job_run.info.run_id == job.mlflow_run_id
    assert job_run.info.status == "FINISHED"
    assert job_run.data.tags["tuner.job"] == str(job_id)
    optimizer_runs = {run.data.tags["tuner.optimizer"]: run for run in by_level["optimizer"]}
    assert sorted(optimizer_runs) == sorted(spec.optimizers)
    assert len(by_level["optimizer"]) == len(spec.optimizers)
    for run in optimizer_runs.values():
        assert run.data.tags["mlflow.parentRunId"] == job_run.info.run_id
        assert run.info.status == "FINISHED"

    trial_runs: dict[tuple[str, int], Any] = {}
    for run in by_level.get("trial", []):
        tags = run.data.tags
        key = (tags["tuner.optimizer"], int(tags["tuner.trial"]))
        assert key not in trial_runs, f"two MLflow runs for trial {key}"
        trial_runs[key] = run
        assert tags["tuner.job"] == str(job_id)
        assert tags["mlflow.parentRunId"] == optimizer_runs[key[0]].info.run_id
    assert sorted(trial_runs) == sorted((name, t.number) for name, found in trials.items()
                                        for t in found)
    for name, found in trials.items():
        for trial in found:
            run = trial_runs[(name, trial.number)]
            state = tuner_state(trial)
            # A lost trial's run says FAIL (its reason says why); it is re-run.
            assert run.data.tags["tuner.state"] == TrialOutcome(state).mlflow_state, (
                name, trial.number)
            expected_status = "FINISHED" if state in ("COMPLETE", "PRUNED") else "FAILED"
            assert run.info.status == expected_status
            if lost(trial):
                assert run.data.tags["tuner.reason"] == trial.user_attrs["reason"]
            if state == "COMPLETE":
                history = client.get_metric_history(run.info.run_id, spec.metric)
                assert sorted(m.step for m in history) == list(range(1, spec.epochs + 1))
                last = max(history, key=lambda m: m.step).value
                assert last == pytest.approx(trial.value, rel=1e-9)
            if state == "PRUNED":
                history = client.get_metric_history(run.info.run_id, spec.metric)
                assert 1 <= len(history) < spec.epochs

    finals = Counter(run.data.tags["tuner.optimizer"] for run in by_level.get("final", []))
    for name, found in trials.items():
        complete = [t for t in found if t.state == optuna.trial.TrialState.COMPLETE]
        assert finals[name] == (spec.final_seeds if complete else 0), name
    for run in by_level.get("final", []):
        tags = run.data.tags
        name = tags["tuner.optimizer"]
        best = min if spec.mode == "min" else max
        complete = [t for t in trials[name] if t.state == optuna.trial.TrialState.COMPLETE]
        assert tags["tuner.trial"] == str(best(complete, key=trial_value).number)
        assert tags["mlflow.parentRunId"] == optimizer_runs[name].info.run_id
        assert tags["tuner.state"] in ("COMPLETE", "DIVERGED", "FAIL")

    # -- the export: a file torch.optim loads, pointing at the best trial's run --------------
    path = export_path(settings, job_id)
    assert path.is_file()
    document = yaml.safe_load(path.read_text())
    assert document["job"] == job_id
    assert job.result["export"] == document
    for name, item in document["optimizers"].items():
        assert item["trial"] == optuna.load_study(
            study_name=f"job-{job_id}-{name}", storage=settings.database_url).best_trial.number
        assert item["mlflow_run_id"] == trial_runs[(name, item["trial"])].info.run_id
        import torch

        optimizer, _ = load_optimizer(path, torch.nn.Linear(3, 2).parameters(), optimizer=name)
        assert f"torch.optim.{type(optimizer).__name__}" == item["class"]
    if outcome is not None:
        assert outcome.export == document
    return trials


# -- the jobs ----------------------------------------------------------------------------------


def test_a_small_job_keeps_every_invariant() -> None:
    settings, job_id, spec, outcome = submit(SMALL)

    trials = check_invariants(settings, job_id, spec, outcome)

    for found in trials.values():
        assert [t.state.name for t in found] == ["COMPLETE"] * 3
        # Trial 0 of every optimizer is its library defaults.
        assert found[0].params["lr"] == 0.001
    job = job_row(settings, job_id)
    assert [row["optimizer"] for row in job.result["leaderboard"]] == [
        row["optimizer"] for row in outcome.leaderboard]
    assert Path(job.result["export_path"]) == export_path(settings, job_id).resolve()
    assert job.result["export"]["best"] == outcome.leaderboard[0]["optimizer"]


def test_diverging_trials_are_recorded_and_the_job_still_succeeds() -> None:
    settings, job_id, spec, outcome = submit({
        "name": "diverge",
        "task": "rosenbrock",
        "optimizers": ["sgd", "adam"],
        "trials": 3,
        "epochs": 3,
        "final_seeds": 1,
        "max_concurrent": 2,
        "space_overrides": {"sgd": {"lr": {"choices": [1.0e+6]}}},
    })

    trials = check_invariants(settings, job_id, spec, outcome)

    assert [tuner_state(t) for t in trials["sgd"]] == ["DIVERGED"] * 3
    assert all(t.user_attrs["reason"] == "the loss became NaN or inf" for t in trials["sgd"])
    assert job_row(settings, job_id).progress["optimizers"]["sgd"]["diverged"] == 3
    _, _, runs = mlflow_runs(settings, job_id)
    diverged = [r for r in runs if r.data.tags.get("tuner.state") == "DIVERGED"]
    assert len(diverged) == 3
    assert {r.data.tags["tuner.reason"] for r in diverged} == {"the loss became NaN or inf"}
    # No setting of sgd completed: nothing to re-run or export; it ranks last.
    assert list(outcome.export["optimizers"]) == ["adam"]
    assert outcome.leaderboard[-1]["optimizer"] == "sgd"
    assert outcome.leaderboard[-1]["diverged"] == 3


def test_a_pruner_prunes_and_mlflow_records_it() -> None:
    settings, job_id, spec, outcome = submit({
        "name": "prune",
        "task": "digits-logreg",
        "optimizers": ["minibatch"],
        "trials": 12,
        "epochs": 5,
        "sampler": "random",
        "pruner": "median",
        "final_seeds": 0,
        "max_concurrent": 2,
    })

    trials = check_invariants(settings, job_id, spec, outcome)

    pruned = [t for t in trials["minibatch"] if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [t.state.name for t in trials["minibatch"]]
    _, _, runs = mlflow_runs(settings, job_id)
    assert sorted(int(r.data.tags["tuner.trial"]) for r in runs
                  if r.data.tags.get("tuner.state") == "PRUNED") == [t.number for t in pruned]
    for trial in pruned:
        assert len(trial.intermediate_values) < spec.epochs


def test_the_same_job_with_the_same_seed_gives_the_same_trials() -> None:
    document = {**SMALL, "name": "again", "optimizers": ["minibatch", "adam"], "trials": 4,
                "epochs": 2, "final_seeds": 1, "max_concurrent": 1, "seed": 3}

    runs = []
    for _ in range(2):
        settings, job_id, spec, outcome = submit(document)
        check_invariants(settings, job_id, spec, outcome)
        runs.append((
            {name: [(t.number, t.params, t.value, t.state.name)
                    for t in study.get_trials(deepcopy=False)]
             for name, study in studies(settings, job_id, spec).items()},
            [(row["optimizer"], row["best"], row["finals"]) for row in outcome.leaderboard],
            outcome.export["optimizers"],
        ))

    (first_trials, first_board, first_export), (trials, board, export) = runs
    assert trials == first_trials
    assert board == first_board
    assert {n: {k: v for k, v in e.items() if k != "mlflow_run_id"} for n, e in export.items()} \
        == {n: {k: v for k, v in e.items() if k != "mlflow_run_id"}
            for n, e in first_export.items()}


def test_a_metric_the_task_does_not_report_fails_the_job_cleanly() -> None:
    # A built-in task's metrics are checked when the job is validated (test_spec); a
    # factory named by its module path says what it reports only when a worker builds it.
    task = "workers.tasks.digits:logreg"
    settings = get_settings()
    spec = parse_job({**SMALL, "name": "badmetric", "task": task, "metric": "val_nonexistent"})
    job_id = create_local_job(settings, spec)
    message = (f"metric: task {task!r} does not report 'val_nonexistent'; it reports "
               "val_loss, train_loss, val_accuracy")

    with pytest.raises(TaskError) as info:
        run_job(settings, job_id, spec)

    assert str(info.value) == message
    job = job_row(settings, job_id)
    assert job.state == "failed"
    assert job.error == f"TaskError: {message}"
    for study in studies(settings, job_id, spec).values():
        assert all(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
    _, _, runs = mlflow_runs(settings, job_id)
    assert runs and all(run.info.status == "FAILED" for run in runs)
    assert not export_path(settings, job_id).exists()


@pytest.mark.postgres
def test_the_engine_on_postgresql(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNER_DB_URL", pg_url)

    settings, job_id, spec, outcome = submit({**SMALL, "name": "pg", "optimizers": ["adam"],
                                              "trials": 2, "epochs": 2, "final_seeds": 1})

    assert settings.database_url == pg_url
    check_invariants(settings, job_id, spec, outcome)
    assert f"job-{job_id}-adam" in optuna.get_all_study_names(pg_url)
    with store.session_scope(pg_url) as session:
        job = store.get_job(session, job_id)
        assert job.state == "succeeded"
        assert job.result is not None
        assert job.result["export"]["job"] == job_id
    # Nothing went to the embedded SQLite jobs database.
    assert not (settings.home / "tuner.db").exists()


# -- a worker dies mid-trial -------------------------------------------------------------------


def _alive_workers() -> dict[str, int]:
    """Actor id -> pid of every live TrialWorker actor of this Ray session.

    ``ray.util.state.list_actors`` needs the dashboard, which the test session turns off;
    the GCS table behind it is read directly.
    """
    from ray._private import state

    return {actor_id: info["Pid"] for actor_id, info in state.actors().items()
            if info.get("ActorClassName") == "_Worker" and info.get("State") == "ALIVE"}


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_a_killed_worker_loses_one_trial_which_is_rerun_and_the_job_succeeds() -> None:
    settings = get_settings()
    spec = parse_job({
        "name": "death",
        "task": "digits-cnn",
        "optimizers": ["adam"],
        "trials": 6,
        "epochs": 12,
        "final_seeds": 0,
        "max_concurrent": 2,
        "space_overrides": {"adam": {"batch_size": {"choices": [16]}}},
    })
    job_id = create_local_job(settings, spec)
    before = set(_alive_workers())
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["outcome"] = run_job(settings, job_id, spec)
        except BaseException as e:  # noqa: BLE001 - reported by the assertions below
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def searching() -> bool:
        # Opening Optuna's storage while the coordinator creates its tables races on a new
        # SQLite file ("table ... already exists"): wait until the search phase is recorded.
        assert thread.is_alive(), f"the job ended early: {result!r}"
        progress = job_row(settings, job_id).progress or {}
        return progress.get("phase") == "search"

    def running_trial() -> bool:
        assert thread.is_alive(), f"the job ended early: {result!r}"
        study = optuna.load_study(study_name=f"job-{job_id}-adam", storage=settings.database_url)
        return any(t.state == optuna.trial.TrialState.RUNNING
                   for t in study.get_trials(deepcopy=False))

    _wait(searching, 120, "the search phase")
    _wait(running_trial, 60, "a running trial")
    ours = _wait(lambda: {a: p for a, p in _alive_workers().items() if a not in before}, 30,
                 "the job's workers")
    time.sleep(0.2)  # into the trial's first epochs
    victim = sorted(ours.values())[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)

    assert not thread.is_alive(), "the job did not end"
    assert "error" not in result, repr(result.get("error"))
    trials = check_invariants(settings, job_id, spec, result["outcome"])["adam"]
    dead = [t for t in trials if lost(t)]
    assert len(dead) == 1
    (dead_trial,) = dead
    assert dead_trial.state == optuna.trial.TrialState.FAIL
    assert dead_trial.user_attrs["reason"].startswith("worker died: ")
    finished = [t for t in trials if not lost(t)]
    assert len(finished) == 6
    assert {t.state.name for t in finished} <= FINISHED
    # The lost configuration was tried again.
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == dead_trial.number]
    assert [t.params for t in reruns] == [dead_trial.params]
    job = job_row(settings, job_id)
    assert job.progress["optimizers"]["adam"]["lost"] == 1
    _, _, runs = mlflow_runs(settings, job_id)
    died = [r for r in runs if r.data.tags.get("tuner.reason", "").startswith("worker died")]
    assert [int(r.data.tags["tuner.trial"]) for r in died] == [dead_trial.number]
    assert died[0].data.tags["tuner.state"] == "FAIL"
    assert died[0].info.status == "FAILED"
    assert math.isfinite(result["outcome"].leaderboard[0]["best"])
