"""A real MLflow tracking server that goes away mid-job (docs/design.md: "a transient database or
MLflow outage (up to a minute) is ridden out with retries: the job pauses and goes on, with
its exact budget; a longer one fails the job with a clear error").

The server (``mlflow server`` over a SQLite store, artifacts served through it) is stopped
once the job's trial runs are there and started again on the same port and store:

- ~15 s later: the job goes on and succeeds with its exact budget, and MLflow holds every
  run once, ended, agreeing with Optuna (:func:`check_invariants` of ``test_engine``);
- never, with ``TUNER_MLFLOW_RETRY_S=5``: the job fails with an error naming the server and
  the setting, every Optuna trial ended; once the server is back, no trial has two runs and
  closing the job's books (what ``tuner serve`` does) leaves nothing RUNNING.

And every call the tracker makes is safe to repeat: through a proxy that loses every other
answer of the server to a write (the server did it; the client cannot know), each run,
metric and table is there once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from tests.integration.servers import free_port
from tests.integration.test_engine import check_invariants, job_row, lost
from tests.waits import wait_until
from tuner import store
from tuner.config import Settings, get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.engine.recovery import close_books
from tuner.errors import MlflowUnavailableError
from tuner.results import TrialOutcome
from tuner.spec import JobSpec, parse_job
from tuner.tracking import JobTracker, has_leaderboard_view

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

JOB = {"name": "outage", "task": "digits-logreg", "optimizers": ["sgd", "adam"],
       "trials": 8, "epochs": 3, "final_seeds": 2, "max_concurrent": 2, "seed": 0}


class TrackingServer:
    """``mlflow server`` on one loopback port over one store, stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while not self.answers():
            assert self.process.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not come up within 180 s"
            time.sleep(0.5)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it as ``docker compose stop`` does (SIGTERM), killing it if it lingers."""
        if self.process is None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=30)
        self.process = None
        assert not self.answers()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackingServer]:
    server = TrackingServer(tmp_path / "mlflow")
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    try:
        yield server
    finally:
        server.stop()


def start_job(pool: ThreadPoolExecutor) -> tuple[Settings, int, JobSpec, Future[Any]]:
    settings = get_settings()
    spec = parse_job(JOB)
    job_id = create_local_job(settings, spec)
    return settings, job_id, spec, pool.submit(run_job, settings, job_id, spec)


def wait_for_trial_runs(server: TrackingServer, job_id: int, job: Future[Any], *,
                        at_least: int) -> None:
    """Until the job has ``at_least`` trial runs in MLflow (it is still running then)."""
    client = MlflowClient(tracking_uri=server.url)
    deadline = time.monotonic() + 300
    while True:
        assert not job.done(), job.exception()
        experiment = client.get_experiment_by_name(f"job-{job_id}-{JOB['name']}")
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id],
                                      filter_string="tags.`tuner.level` = 'trial'",
                                      max_results=1000)
            if len(runs) >= at_least:
                return
        assert time.monotonic() < deadline, "no trial runs within 300 s"
        time.sleep(0.5)


def test_a_tracking_server_away_for_seconds_is_ridden_out(
    server: TrackingServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # The outage lasts until the job met it, plus the server's start-up, which a loaded
    # machine stretches.
    monkeypatch.setenv("TUNER_MLFLOW_RETRY_S", "180")
    caplog.set_level(logging.INFO, logger="tuner.tracking")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-job") as pool:
        settings, job_id, spec, job = start_job(pool)
        wait_for_trial_runs(server, job_id, job, at_least=2)
        server.stop()
        # Away until the job has met the outage: a call refused, to be made again.
        wait_until(lambda: any(f"MLflow at {server.url} cannot be reached" in r.getMessage()
                               for r in caplog.records),
                   timeout=120, message="the job made no MLflow call while it was away")
        # The job waits for MLflow (it cannot end without it) rather than dropping its runs.
        assert not job.done(), job.exception()
        server.start()
        outcome = job.result(timeout=900)

    messages = [record.getMessage() for record in caplog.records]
    assert any(f"MLflow at {server.url} cannot be reached" in m for m in messages), messages
    assert any(f"MLflow at {server.url} answers again" in m for m in messages), messages
    # The exact budget, every trial once in MLflow with its Optuna state, nothing RUNNING,
    # each metric history once (a batch sent again is not logged twice).
    check_invariants(settings, job_id, spec, outcome)
    with store.session_scope(settings.database_url) as session:
        last = store.job_events(session, job_id)[-1]
        # No "MLflow's copy of its results is incomplete".
        assert (last.state, last.message) == ("succeeded", None)
    assert has_leaderboard_view(server.url, outcome.experiment_id)


def test_a_tracking_server_away_for_longer_fails_the_job_with_a_clear_error(
    server: TrackingServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNER_MLFLOW_RETRY_S", "5")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-job") as pool:
        settings, job_id, spec, job = start_job(pool)
        wait_for_trial_runs(server, job_id, job, at_least=2)
        server.stop()
        with pytest.raises(MlflowUnavailableError) as raised:
            job.result(timeout=600)

    message = str(raised.value)
    assert message.startswith(f"the MLflow tracking server {server.url} could not be reached "
                              "for 5 s (TUNER_MLFLOW_RETRY_S), so this job's MLflow runs are "
                              "incomplete; "), message
    assert "Connection refused" in message, message
    row = job_row(settings, job_id)
    assert row.state == "failed"
    assert row.error == f"MlflowUnavailableError: {message}"
    assert row.progress["optimizers"]["sgd"]["running"] == 0
    # Every trial it started ended in Optuna, none beyond the budget.
    trials = {name: optuna.load_study(study_name=f"job-{job_id}-{name}",
                                      storage=settings.database_url).get_trials(deepcopy=False)
              for name in spec.optimizers}
    assert all(t.state.is_finished() for found in trials.values() for t in found), trials
    assert sum(not lost(t) for found in trials.values() for t in found) <= 2 * spec.trials

    # Once MLflow is back: no trial has two runs, and closing the job's books (tuner serve
    # does it for a failed job) ends what could not be ended while it was away.
    server.start()
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.get_experiment_by_name(f"job-{job_id}-{JOB['name']}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    keys = [(r.data.tags["tuner.optimizer"], r.data.tags["tuner.trial"]) for r in runs
            if r.data.tags["tuner.level"] == "trial"]
    assert len(keys) == len(set(keys)), sorted(keys)
    assert [r.data.tags["tuner.level"] for r in runs].count("job") == 1
    close_books(settings, job_id, job_name=spec.name, optimizers=spec.optimizers,
                reason=f"job failed: {row.error}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    for run in runs:
        if run.data.tags["tuner.level"] == "trial":
            name, number = run.data.tags["tuner.optimizer"], int(run.data.tags["tuner.trial"])
            (trial,) = [t for t in trials[name] if t.number == number]
            expected = TrialOutcome(trial.user_attrs.get("tuner_state", trial.state.name))
            # A run whose end MLflow did not get in time is closed as FAIL.
            assert run.data.tags["tuner.state"] in (expected.mlflow_state, "FAIL"), (
                name, number, run.data.tags)


class LosingProxy:
    """A TCP proxy to a tracking server that loses every other answer to a write: the
    request reaches the server, which does it and answers, but the client's connection is
    reset instead (an answer lost to a dropped connection)."""

    WRITES = ("/experiments/create", "/runs/create", "/runs/log-batch", "/runs/update",
              "/runs/set-tag", "/experiments/set-experiment-tag", "mlflow-artifacts/artifacts")

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen: dict[str, int] = {}
        self.lost: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.port))
        lose = threading.Event()

        def answers() -> None:
            try:
                while data := upstream.recv(65536):
                    if lose.is_set():  # the server answered: the client never hears it
                        break
                    client.sendall(data)
            except OSError:
                pass
            for end in (client, upstream):
                try:
                    end.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv
                except OSError:
                    pass
                end.close()

        threading.Thread(target=answers, daemon=True).start()
        try:
            while data := client.recv(65536):
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                method, _, rest = line.partition(" ")
                path = rest.split(" ", 1)[0]
                write = next((w for w in self.WRITES if w in path), None)
                if method in ("POST", "PUT") and write is not None:
                    with self._lock:
                        self.seen[write] = self.seen.get(write, 0) + 1
                        if self.seen[write] % 2 == 1:
                            self.lost.append(path)
                            lose.set()
                upstream.sendall(data)
        except OSError:
            pass


def test_every_call_is_safe_to_repeat_when_its_answer_is_lost(server: TrackingServer) -> None:
    proxy = LosingProxy(server.port)
    tracker = JobTracker(proxy.url, None, job_id=1, job_name="lossy", retry_s=120)
    try:
        tracker.start(spec={"task": "rosenbrock", "name": "lossy"}, optimizers=["adam"])
        tracker.run_started("adam/trial/0", optimizer="adam", level="trial", number=0,
                            name="adam #0", params={"lr": 0.01}, tags={"tuner.seed": "0"})
        tracker.run_finished("adam/trial/0", state="COMPLETE", epochs=[
            {"epoch": 1, "metrics": {"val_loss": 2.0}},
            {"epoch": 2, "metrics": {"val_loss": 1.0}}], summary={"final_val_loss": 1.0})
        board = [{"rank": 1, "optimizer": "adam", "mean": 1.0, "std": 0.0, "best": 1.0}]
        tracker.log_optimizer("adam", metrics={"rank": 1}, params={}, headline="#1 1")
        tracker.publish_leaderboard(board, metric="val_loss")
        tracker.finish_job(status="FINISHED", metrics={"adam.val_loss": 1.0},
                           artifacts={"export.yaml": "job: 1\n"}, headline="adam 1")
        tracker.close()
    finally:
        proxy.close()

    assert tracker.failure is None and tracker.errors == []
    # Answers to each kind of write were lost, and made again.
    assert {w for w in LosingProxy.WRITES if any(w in p for p in proxy.lost)} == {
        "/experiments/create", "/runs/create", "/runs/log-batch", "/runs/update",
        "/runs/set-tag", "/experiments/set-experiment-tag", "mlflow-artifacts/artifacts"}
    client = MlflowClient(tracking_uri=server.url)
    (experiment,) = [e for e in client.search_experiments() if e.name == "job-1-lossy"]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(r.data.tags["tuner.level"] for r in runs) == ["job", "optimizer", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)
    by_level = {r.data.tags["tuner.level"]: r for r in runs}
    trial = by_level["trial"]
    history = client.get_metric_history(trial.info.run_id, "val_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]
    assert trial.data.params == {"lr": "0.01"}
    assert trial.data.tags["tuner.state"] == "COMPLETE"
    job_run = by_level["job"]
    assert job_run.info.run_name == "job 1 lossy · adam 1"
    table = client.download_artifacts(job_run.info.run_id, "leaderboard_table.json")
    assert json.loads(Path(table).read_text())["data"] == [[1, "adam", 1.0, 0.0, None, None,
                                                           None, None, 1.0, None, None, None]]
    assert has_leaderboard_view(server.url, experiment.experiment_id)
