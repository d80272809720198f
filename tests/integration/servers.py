"""What the tests of `tuner serve` share: the server as a subprocess, the processes it leaves,
and what a job leaves in its stores.

- :class:`Server` starts ``tuner serve`` on a free loopback port in a session of its own,
  marked in its environment (and so in that of the local Ray it starts), and drives it over
  HTTP with the bearer token of its environment;
- :func:`processes_with` and :func:`stop_processes` find and end processes by that mark
  (`ray stop` would stop every Ray on the machine);
- :func:`running_trials` reads the studies' trials with plain SQL while a server runs;
  :func:`check_nothing_lost` checks a finished job of :data:`JOB` in Optuna, MLflow and the
  API's counts.

The fixtures built on these (``servers``, ``db_url``) are in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import optuna
import sqlalchemy as sa
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.processes import free_port, free_ports, processes_with, stop_processes
from tests.ray_cluster import RayCluster
from tuner.results import TrialOutcome

__all__ = ["GATED_JOB", "JOB", "TOKEN", "TUNER", "Gate", "Server", "check_nothing_lost",
           "free_port", "free_ports", "processes_with", "running_trials", "server_env",
           "stop_processes", "wait_mid_job"]

TUNER = str(Path(sys.executable).with_name("tuner"))
TOKEN = "restart-token"
#: A job long enough to be interrupted in the middle (two optimizers, trials in parallel).
JOB: dict[str, Any] = {
    "name": "restart-me", "task": "digits-cnn", "optimizers": ["adam", "momentum"], "trials": 3,
    "epochs": 20, "final_seeds": 1, "max_concurrent": 2, "pruner": "none", "seed": 0,
}
#: :data:`JOB` on a training loop that a test holds in the middle (:class:`Gate`).
GATED_JOB = JOB | {"task": "gated_loop:train"}

GATED_LOOP = '''"""A training loop that a test holds in the middle of a job.

Each study's trial 0 and the final re-runs run through; trials 1 to 41 (seeds 1 to 41, the
job's seed being 0) wait at their second epoch until the test opens the gate.
"""
import math
import time
from pathlib import Path

import tuner

GATE = Path({gate!r})


@tuner.training_loop
def train(trial: tuner.Trial) -> None:
    lr = float(trial.hyperparameters["lr"])
    for epoch in range(1, trial.epochs + 1):
        while epoch == 2 and 1 <= trial.seed < 42 and not GATE.exists():
            time.sleep(0.05)
        time.sleep(0.02)  # a model that takes a moment
        trial.report(epoch, val_loss=abs(math.log10(lr) + 2.5) + 1.0 / epoch)
'''
#: The variables of the test run's environment a server under test must not inherit.
_NOT_INHERITED = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "TUNER_DB_URL",
                  "MLFLOW_TRACKING_URI", "TUNER_URL", "TUNER_API_TOKEN", "TUNER_MAX_JOBS",
                  "TUNER_MAX_CODE_MB")


# -- the server -----------------------------------------------------------------------------


def server_env(home: Path, ray: RayCluster | None, **extra: str) -> dict[str, str]:
    """The environment of a server (or a CLI client) on ``home`` as TUNER_HOME: the test
    run's, less the stores, server and limits it may name, plus ``extra``.

    The server joins ``ray`` (the test run's cluster, ``RAY_ADDRESS`` and its token); with
    ``None`` it starts a local Ray of its own, as `tuner serve` does by default.
    """
    base = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    return base | (ray.env if ray else {}) | {"TUNER_HOME": str(home), "COLUMNS": "120"} | extra


class Gate:
    """Holds a :data:`GATED_JOB` in the middle until :meth:`open`: its trials past the first
    of each study wait, so "mid-job" is a state the test makes, not a moment it catches.

    ``folder`` gets the loop's module (``gated_loop.py``, naming the gate's file): the code a
    server's job ships (:meth:`Server.submit_gated`), or the working folder of `tuner run`.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "gate-open"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "gated_loop.py").write_text(GATED_LOOP.format(gate=str(self.path)))

    def open(self) -> None:
        self.path.touch()

    def archive(self) -> bytes:
        """The loop's module as the zip archive that ``POST /v1/code`` takes."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.write(self.folder / "gated_loop.py", "gated_loop.py")
        return buffer.getvalue()


class Server:
    """One `tuner serve` process; ``marker`` is in the environment of it and of its Ray.

    Its HTTP client sends the ``TUNER_API_TOKEN`` of ``env``; ``client_env`` is ``env`` with
    ``TUNER_URL`` naming this server (what a `tuner` CLI client of it runs with).
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_env = env | {"TUNER_URL": self.url}
        self.marker = f"TUNER_TEST_SERVER={uuid.uuid4().hex}"
        key, _, value = self.marker.partition("=")
        self.log = log
        with log.open("a") as out:
            out.write(f"\n==== tuner serve on port {self.port}\n")
            out.flush()
            self.process = subprocess.Popen(
                [TUNER, "serve", "--port", str(self.port)], env=env | {key: value},
                cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        token = env.get("TUNER_API_TOKEN")
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})

    def wait_up(self, timeout: float = 120) -> None:
        """Until ``/healthz`` says its Ray is up."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.http.get("/healthz", timeout=5).json()["coordinator"]["ray"] == "up":
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.3)

    def submit_gated(self, gate: Gate) -> int:
        """Upload the gated loop and submit :data:`GATED_JOB` with it; the job's id."""
        upload = self.http.post("/v1/code", content=gate.archive(),
                                headers={"Content-Type": "application/zip"})
        assert upload.status_code in (200, 201), upload.text
        response = self.http.post("/v1/jobs", json=GATED_JOB | {"code": upload.json()["sha256"]})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        return job

    def wait_for(self, job_id: int, predicate: Callable[[dict[str, Any]], bool], *,
                 timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log.read_text()
            job = self.job(job_id)
            if predicate(job):
                return job
            assert time.monotonic() < deadline, f"job {job_id}: {job}\n{self.log.read_text()}"
            time.sleep(0.5)

    def wait_for_log(self, text: str, *, timeout: float) -> None:
        """Until the server's log says ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the server's process group (it and its local Ray's daemons); Ray's workers,
        in groups of their own, die with their raylet: wait until nothing of it is left."""
        self.http.close()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.reap()

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM the server alone (as `docker stop` does); its exit code."""
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not stop within {timeout} s\n"
                                 + self.log.read_text()) from None

    def reap(self, grace: float = 30) -> list[int]:
        """Wait ``grace`` s for the processes of this server (and its Ray) to end, then kill
        what is left; the ids that were left."""
        deadline = time.monotonic() + grace
        while (left := processes_with(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            stop_processes(left, grace=5)
        return left


# -- what a job leaves in its stores --------------------------------------------------------


def running_trials(db_url: str) -> tuple[int, int, int]:
    """(running, of them fully asked, finished) trials of every study in ``db_url``; zeros
    before Optuna's tables exist.

    Read with plain read-only SQL on one cached engine: opening Optuna storages here (three
    per poll) raced the server creating its tables and was slow enough on PostgreSQL for a
    short job to end between two polls. A trial is fully asked when it has a value for every
    parameter of its search space: ``study.ask`` writes them one by one, so a trial being
    asked has only some.
    """
    import search_spaces

    query = sa.text(
        "SELECT s.study_name, t.state, "
        "(SELECT count(*) FROM trial_params p WHERE p.trial_id = t.trial_id) "
        "FROM trials t JOIN studies s ON s.study_id = t.study_id"
    )
    try:
        with _reader(db_url).connect() as conn:
            rows = conn.execute(query).all()
    except sa.exc.OperationalError as e:
        if "no such table" in str(e) or "unable to open" in str(e):
            return 0, 0, 0
        raise
    except sa.exc.ProgrammingError as e:  # PostgreSQL: relation "trials" does not exist
        if "does not exist" in str(e):
            return 0, 0, 0
        raise
    running = asked = finished = 0
    for name, state, n_params in rows:
        optimizer = name.rsplit("-", 1)[1]
        size = len(search_spaces.load(optimizer).distributions())
        running += state == "RUNNING"
        asked += state == "RUNNING" and n_params == size
        finished += state in ("COMPLETE", "PRUNED", "FAIL")
    return running, asked, finished


_readers: dict[str, sa.Engine] = {}


def _reader(db_url: str) -> sa.Engine:
    """One engine per database for the whole run (SQLite opened read-only)."""
    if db_url not in _readers:
        if db_url.startswith("sqlite:///"):
            path = db_url.removeprefix("sqlite:///")
            _readers[db_url] = sa.create_engine(
                f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=sa.pool.NullPool)
        else:
            _readers[db_url] = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    return _readers[db_url]


def wait_mid_job(server: Server, job_id: int, db_url: str, *, timeout: float = 240) -> None:
    """Until the job is in the middle: trials running, none of them being asked (see
    test_sigkill_while_a_trial_is_being_asked), and at least one finished."""
    deadline = time.monotonic() + timeout
    while True:
        running, asked, finished = running_trials(db_url)
        if running >= 1 and asked == running and finished >= 1:
            return
        assert server.process.poll() is None, server.log.read_text()
        state = server.job(job_id)["state"]
        assert state in ("queued", "running"), (
            f"job {job_id} is {state} before the test saw a trial running after one finished "
            f"(last seen: running, asked, finished = {running, asked, finished})")
        assert time.monotonic() < deadline, (
            f"no trial ran within {timeout} s: {server.job(job_id)}")
        time.sleep(0.1)


def check_nothing_lost(job: dict[str, Any], db_url: str, tracking_uri: str,
                       *reasons: str) -> int:
    """The invariants of a resumed job of :data:`JOB` (or :data:`GATED_JOB`); how many trials
    were lost (and
    re-run), each for one of ``reasons``."""
    job_id = job["id"]
    assert job["state"] == "succeeded", job
    progress = job["progress"]["optimizers"]
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(f"job-{job_id}-{JOB['name']}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    trial_runs: dict[tuple[str, int], list[Any]] = {}
    for run in runs:
        if run.data.tags.get("tuner.level") == "trial":
            key = (run.data.tags["tuner.optimizer"], int(run.data.tags["tuner.trial"]))
            trial_runs.setdefault(key, []).append(run)

    lost_total = 0
    for name in JOB["optimizers"]:
        study = optuna.load_study(study_name=f"job-{job_id}-{name}", storage=db_url)
        trials = study.get_trials(deepcopy=False)
        assert [t.number for t in trials if not t.state.is_finished()] == []
        lost = [t for t in trials if t.user_attrs.get("tuner_state") == "LOST"]
        assert {t.user_attrs["reason"] for t in lost} <= set(reasons), [
            t.user_attrs for t in lost]
        lost_total += len(lost)
        assert len(trials) - len(lost) == JOB["trials"], [
            (t.number, t.state, t.user_attrs) for t in trials]
        for t in lost:
            assert t.state == TrialState.FAIL and t.user_attrs["tuner_state"] == "LOST"
            reruns = [u for u in trials if u.user_attrs.get("rerun_of") == t.number]
            assert len(reruns) == 1, (t.number, [u.user_attrs for u in trials])
            # A trial killed while it was asked has some parameters only; Optuna samples the
            # others of its re-run.
            assert reruns[0].params.items() >= t.params.items()
        for t in trials:
            recorded = trial_runs.get((name, t.number), [])
            assert len(recorded) == 1, (name, t.number, [r.info.run_id for r in recorded])
            run = recorded[0]
            assert run.info.status in ("FINISHED", "FAILED", "KILLED"), run.info.status
            assert run.data.tags["tuner.state"] == TrialOutcome(
                t.user_attrs["tuner_state"]).mlflow_state, (name, t.number, run.data.tags,
                                                            t.user_attrs)
            if t in lost:
                assert run.data.tags.get("tuner.reason") == t.user_attrs["reason"]
        numbers = {t.number for t in trials}
        assert {n for (o, n) in trial_runs if o == name} == numbers

        states = [t.user_attrs["tuner_state"] for t in trials if t not in lost]
        counts = progress[name]
        assert counts["complete"] == states.count("COMPLETE"), (name, counts, states)
        assert counts["pruned"] == states.count("PRUNED"), (name, counts, states)
        assert counts["diverged"] == states.count("DIVERGED"), (name, counts, states)
        assert counts["failed"] == states.count("FAIL"), (name, counts, states)
        assert counts["lost"] == len(lost), (name, counts, len(lost))
        assert counts["finished"] == JOB["trials"] and counts["running"] == 0, counts
        assert counts["final_done"] == counts["final_total"] == JOB["final_seeds"], counts
    assert len(trial_runs) == sum(
        len(optuna.load_study(study_name=f"job-{job_id}-{n}", storage=db_url).trials)
        for n in JOB["optimizers"])
    return lost_total
