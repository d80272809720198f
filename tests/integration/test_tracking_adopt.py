"""A run that a killed coordinator began is ended by the next one with each epoch once.

A real MLflow store (SQLite), two trackers of the same job one after the other, as a
restarted `tuner serve` has them: the first logs a trial's epochs and is killed before it
ends the run, the second adopts the run (:mod:`tuner.engine.recovery`) and ends it with the
curve it rebuilt from Optuna.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric

from tuner.tracking import JobTracker

SPEC = {"name": "adopt", "task": "digits_mlp"}
EPOCHS: list[dict[str, Any]] = [
    {"epoch": epoch, "metrics": {"val_accuracy": 0.5 + epoch / 100, "val_loss": 1 / epoch}}
    for epoch in range(1, 6)
]


def tracker_of(uri: str, tmp_path: Path) -> JobTracker:
    tracker = JobTracker(uri, (tmp_path / "artifacts").as_uri(), job_id=7, job_name="adopt",
                         retry_s=5)
    tracker.start(spec=SPEC, optimizers=["adam"])
    return tracker


def begin_trial(tracker: JobTracker) -> str:
    tracker.run_started("adam/trial/0", optimizer="adam", level="trial", number=0,
                        name="adam #0", params={"lr": 0.01}, tags={})
    run_id = tracker.run_id("adam/trial/0")
    assert run_id is not None
    return run_id


def finish_after_restart(uri: str, tmp_path: Path, epochs: list[dict[str, Any]]) -> str:
    """What recovery does with a trial run it finds RUNNING: adopt it and end it."""
    time.sleep(0.01)  # the second coordinator's timestamps differ from the first's
    second = tracker_of(uri, tmp_path)
    try:
        assert second.resumed
        (run,) = second.recorded_runs("trial").values()
        assert run.info.status == "RUNNING"
        second.adopt("adam/trial/0", run.info.run_id)
        second.run_finished("adam/trial/0", state="COMPLETE", epochs=epochs,
                            summary={"final_val_accuracy": 0.55})
        second.flush()
        assert second.errors == []
        return str(run.info.run_id)
    finally:
        second.close()


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(point.step for point in client.get_metric_history(run_id, key))


def test_epochs_the_killed_coordinator_logged_are_not_logged_again(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tracker_of(uri, tmp_path)
    run_id = begin_trial(first)
    # The killed coordinator's run_finished got as far as the epochs: no end, no summary.
    first.run_finished("adam/trial/0", state="COMPLETE", epochs=EPOCHS)
    first.flush()
    client = MlflowClient(tracking_uri=uri)
    client.update_run(run_id, status="RUNNING")  # as if set_terminated had not been made
    first.close()

    # Recovery rebuilds the curve of the job's metric only (Optuna's intermediate values).
    curve = [{"epoch": e["epoch"], "metrics": {"val_accuracy": e["metrics"]["val_accuracy"]}}
             for e in EPOCHS]
    assert finish_after_restart(uri, tmp_path, curve) == run_id

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tuner.state"] == "COMPLETE"
    assert steps(client, run_id, "val_accuracy") == [1, 2, 3, 4, 5]
    assert steps(client, run_id, "val_loss") == [1, 2, 3, 4, 5]
    assert steps(client, run_id, "final_val_accuracy") == [0]
    assert run.data.metrics["final_val_accuracy"] == 0.55


def test_epochs_the_killed_coordinator_did_not_log_are_logged(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tracker_of(uri, tmp_path)
    run_id = begin_trial(first)
    # It logged the first two epochs' points only (its batch was cut short).
    first.mlflow.log_batches(run_id, metrics=_metrics_of(EPOCHS[:2]))
    first.close()

    assert finish_after_restart(uri, tmp_path, EPOCHS) == run_id

    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert steps(client, run_id, "val_accuracy") == [1, 2, 3, 4, 5]
    assert steps(client, run_id, "val_loss") == [1, 2, 3, 4, 5]
    assert steps(client, run_id, "final_val_accuracy") == [0]


def _metrics_of(epochs: list[dict[str, Any]]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key=name, value=value, timestamp=now, step=int(report["epoch"]))
            for report in epochs for name, value in report["metrics"].items()]
