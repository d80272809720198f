"""Restart safety for real: SIGKILL `tuner run` in the middle of a job, then `tuner resume`.

Nothing is lost: the job ends with exactly its trial budget per optimizer, the trials that
were running when the process died are FAIL ("coordinator restarted") in Optuna and MLflow
and were run again, and no Optuna trial or MLflow run is left RUNNING.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.integration.servers import Gate
from tests.waits import wait_until
from tuner.results import TrialOutcome

pytestmark = pytest.mark.integration

#: Trials past the first of each study wait at the gate (:class:`Gate`) until the test opens
#: it: the job is in the middle when the test kills it.
JOB: dict[str, Any] = {
    "name": "resume-me",
    "task": "gated_loop:train",
    "optimizers": ["adam", "momentum"],
    "trials": 3,
    "epochs": 20,
    "final_seeds": 1,
    "max_concurrent": 2,
    "pruner": "none",
}


def _tuner(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner.cli", *args]


def _trials(db_url: str) -> dict[str, int]:
    """How many trials are in each state, read with plain SQL: opening an Optuna storage here
    would create Optuna's tables, racing the tuner process that is creating them."""
    path = db_url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return {}
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
            rows = conn.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall()
    except sqlite3.OperationalError:  # the tables do not exist yet
        return {}
    return {str(state): int(count) for state, count in rows}


def _running_trials(db_url: str) -> int:
    return _trials(db_url).get("RUNNING", 0)


def test_sigkill_mid_job_then_resume_keeps_the_budget(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "TUNER_HOME": str(home), "COLUMNS": "120"}
    for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(JOB))
    gate = Gate(tmp_path)  # the loop's module in the folder tuner runs in
    db_url = f"sqlite:///{home / 'tuner.db'}"

    # Its own session, so that the local Ray it starts dies with it.
    process = subprocess.Popen(
        _tuner("run", str(job_file)), env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Each study's first trial done, its second held at the gate.
        wait_until(lambda: _trials(db_url) == {"RUNNING": 2, "COMPLETE": 2},
                   timeout=240, interval=0.5,
                   message=lambda: f"the job is not in the middle: {_trials(db_url)}",
                   alive=process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert _running_trials(db_url) >= 1  # what the killed coordinator left behind
    gate.open()

    resumed = subprocess.run(
        _tuner("resume", "1", "--force"), env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "best optimizer" in resumed.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("job-1-resume-me")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    trial_runs = {
        (r.data.tags["tuner.optimizer"], int(r.data.tags["tuner.trial"])): r
        for r in runs if r.data.tags.get("tuner.level") == "trial"
    }
    lost_total = 0
    for name in JOB["optimizers"]:
        study = optuna.load_study(study_name=f"job-1-{name}", storage=db_url)
        trials = study.get_trials(deepcopy=False)
        assert all(t.state.is_finished() for t in trials)
        lost = [t for t in trials if t.user_attrs.get("reason") == "coordinator restarted"]
        lost_total += len(lost)
        assert len(trials) - len(lost) == JOB["trials"]
        for t in lost:
            assert t.state == optuna.trial.TrialState.FAIL
            # ... and its configuration was run again.
            assert any(u.user_attrs.get("rerun_of") == t.number for u in trials)
        for t in trials:
            run = trial_runs[(name, t.number)]
            assert run.info.status in ("FINISHED", "FAILED")
            expected = TrialOutcome(t.user_attrs["tuner_state"]).mlflow_state
            assert run.data.tags["tuner.state"] == expected
            if t in lost:
                assert run.data.tags["tuner.reason"] == "coordinator restarted"
    assert lost_total >= 1


def test_tuner_cancel_stops_a_local_run_from_another_terminal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "TUNER_HOME": str(home), "COLUMNS": "120"}
    for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({**JOB, "name": "cancel-me", "trials": 50}))
    Gate(tmp_path)  # never opened: the job would hold its trials until cancelled
    db_url = f"sqlite:///{home / 'tuner.db'}"
    process = subprocess.Popen(
        _tuner("run", str(job_file)), env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: _running_trials(db_url) >= 1, timeout=240, interval=0.5,
                   message="no trial started", alive=process)

        cancel = subprocess.run(_tuner("cancel", "1"), env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        _, stderr = process.communicate(timeout=60)  # stops within seconds, not 50 trials
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode == 1
    assert "job 1 cancelled" in stderr
    assert _running_trials(db_url) == 0
    from tuner import store

    with store.session_scope(db_url) as session:
        assert store.get_job(session, 1).state == "cancelled"
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("job-1-cancel-me")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert runs and [r for r in runs if r.info.status == "RUNNING"] == []
