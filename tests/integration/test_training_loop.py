"""A user's own training loop on real Ray workers, end to end: pruning raises TrialPruned
inside the loop, a NaN loss is DIVERGED, an exception FAILs the trial with its message, the
final re-runs use their own seeds, the export loads; the example project runs with
``tuner run``; each new built-in task runs a tiny job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from tests.integration import loops
from tests.integration.test_engine import (
    check_invariants,
    job_row,
    mlflow_runs,
    studies,
    submit,
    tuner_state,
)
from tuner import TaskError, load_optimizer, parse_job
from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, export_path, run_job

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

ROOT = Path(__file__).resolve().parents[2]
PROBE = {
    "name": "loop",
    "task": "tests.integration.loops:probe",
    "optimizers": ["sgd"],
    "trials": 9,
    "epochs": 4,
    "sampler": "random",
    "pruner": "median",
    "final_seeds": 2,
    "max_concurrent": 1,  # one worker: trial after trial, each start stops the last loop
    "seed": 0,
    "space_overrides": {"sgd": {"lr": {"low": 1.0e-4, "high": 1.0}}},
}


def test_a_training_loop_is_pruned_diverges_fails_and_is_rerun_with_final_seeds() -> None:
    loops.EVENTS.unlink(missing_ok=True)

    settings, job_id, spec, outcome = submit(PROBE)

    trials = check_invariants(settings, job_id, spec, outcome)["sgd"]
    states = {t.number: tuner_state(t) for t in trials}
    assert states[2] == "DIVERGED"
    assert trials[2].user_attrs["reason"] == "the loss became NaN or inf"
    assert states[3] == "FAIL"
    assert trials[3].user_attrs["reason"].startswith("ValueError: lr ")
    assert trials[3].user_attrs["reason"].endswith(" is too high for this model")
    assert states[7] == states[8] == "PRUNED"
    # The others learn; the median pruner may stop one whose lr is far from 10^-2.5.
    assert {states[n] for n in (0, 1, 4, 5, 6)} <= {"COMPLETE", "PRUNED"}
    assert Counter(states.values())["COMPLETE"] >= 3
    # What the loop itself saw: report raised TrialPruned in every pruned trial (once the
    # worker moved on), TrialDiverged in the diverged one; the complete ones returned.
    seen = {e["seed"]: e for e in loops.events()}
    for number, state in states.items():
        if state == "PRUNED":
            assert seen[number]["event"] == "TrialPruned", number
            assert seen[number]["epochs"] < spec.epochs
        elif state == "COMPLETE":
            assert seen[number] == {"seed": number, "event": "returned",
                                    "epochs": spec.epochs}
    assert seen[2]["event"] == "TrialDiverged" and seen[2]["epochs"] == 1
    assert 3 not in seen  # it raised its own error
    # The final re-runs: the best setting with the seeds 42 and 43, complete.
    result = outcome.results["sgd"]
    assert [(f.seed, f.state) for f in result.finals] == [(42, "COMPLETE"), (43, "COMPLETE")]
    assert seen[42]["event"] == seen[43]["event"] == "returned"
    best = min((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
               key=lambda t: t.value)
    assert result.best_trial == best.number
    # The job's record: no data of its own (a loop), the export loads into torch.optim.
    job = job_row(settings, job_id)
    assert job.state == "succeeded"
    assert job.result["problem"]["train_size"] is None
    export = yaml.safe_load(export_path(settings, job_id).read_text())
    assert export["task"] == "tests.integration.loops:probe"
    entry = export["optimizers"]["sgd"]
    assert entry["kwargs"]["lr"] == pytest.approx(best.params["lr"], rel=1e-5)
    import torch

    optimizer, _ = load_optimizer(export, torch.nn.Linear(1, 1).parameters())
    assert isinstance(optimizer, torch.optim.SGD)
    _, _, runs = mlflow_runs(settings, job_id)
    by_state = Counter(r.data.tags.get("tuner.state") for r in runs
                       if r.data.tags.get("tuner.level") == "trial")
    assert by_state == Counter(states.values())


def test_a_loop_that_does_not_report_the_jobs_metric_fails_the_job() -> None:
    task = "tests.integration.loops:quiet"
    settings = get_settings()
    spec = parse_job({**PROBE, "name": "quiet", "task": task, "metric": "val_accuracy",
                      "pruner": "none", "trials": 2, "final_seeds": 0})
    job_id = create_local_job(settings, spec)

    with pytest.raises(TaskError) as info:
        run_job(settings, job_id, spec)

    message = (f"metric: training loop {task!r} does not report 'val_accuracy'; it reports "
               "val_loss")
    assert str(info.value) == message
    job = job_row(settings, job_id)
    assert job.state == "failed"
    assert job.error == f"TaskError: {message}"
    for study in studies(settings, job_id, spec).values():
        assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL")
                   for t in study.get_trials(deepcopy=False))


@pytest.mark.parametrize(
    ("task", "metric", "mode"),
    [("cartpole-reinforce", "val_return", "max"),
     ("text-transformer", "val_perplexity", "min"),
     ("vowels-cnn", "val_accuracy", "max")],
)
def test_each_new_task_runs_a_tiny_job(task: str, metric: str, mode: str) -> None:
    started = time.monotonic()
    settings, job_id, spec, outcome = submit({
        "name": f"tiny-{task}", "task": task, "optimizers": ["adam"], "trials": 2, "epochs": 2,
        "metric": metric, "mode": mode, "final_seeds": 1, "max_concurrent": 2,
    })
    seconds = time.monotonic() - started

    trials = check_invariants(settings, job_id, spec, outcome)["adam"]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert [f.state for f in outcome.results["adam"].finals] == ["COMPLETE"]
    assert outcome.leaderboard[0]["best"] is not None
    if task == "text-transformer":  # the text's hash is stored with the results
        assert len(outcome.problem["data_sha256"]) == 64
    print(f"{task}: 2 trials x 2 epochs + 1 final re-run in {seconds:.1f} s")


def test_the_example_project_runs_with_tuner_run(tmp_path: Path) -> None:
    project = tmp_path / "own_loop"
    shutil.copytree(ROOT / "examples" / "own_loop", project)
    env = {**os.environ, "TUNER_HOME": str(tmp_path / "home"), "COLUMNS": "160",
           "PYTHONPATH": str(ROOT)}
    for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)

    for number, job in ((1, "gan.yaml"), (2, "blobs.yaml")):
        result = subprocess.run(
            [sys.executable, "-m", "tuner.cli", "run", job], cwd=project, env=env,
            capture_output=True, text=True, timeout=900,
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert "best optimizer:" in result.stdout
        export = yaml.safe_load((tmp_path / "home" / "exports" / f"job-{number}.yaml")
                                .read_text())
        assert export["best"] in ("sgd", "adam", "momentum", "adamw")
        assert export["optimizers"][export["best"]]["score"]["seeds"] == 2
