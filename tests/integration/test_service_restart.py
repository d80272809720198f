"""Restart safety of `tuner serve` for real (issue 3, points 6 and 7).

A server subprocess (its own session, with the local Ray it starts) runs a job; in the middle
of it the server is killed (SIGKILL of its whole process group, on SQLite and on PostgreSQL)
or stopped (SIGTERM, the graceful stop), and a new server on the same stores finishes the job.
Nothing is lost:

- each optimizer's study ends with exactly its trial budget of trials not lost; the trials that
  were running are FAIL with reason "coordinator restarted" (killed) or "interrupted" (stopped),
  and their configuration ran again (``rerun_of``);
- no Optuna trial and no MLflow run is left RUNNING;
- every Optuna trial has exactly one MLflow trial run with its number and state;
- the job's progress counts (``GET /v1/jobs/{id}``) agree with Optuna.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.integration.test_cluster import processes_with, stop_processes
from tuner.results import TrialOutcome

pytestmark = pytest.mark.integration

TUNER = str(Path(sys.executable).with_name("tuner"))
TOKEN = "restart-token"
JOB = {"name": "restart-me", "task": "digits-cnn", "optimizers": ["adam", "momentum"],
       "trials": 5, "epochs": 30, "final_seeds": 1, "max_concurrent": 2, "pruner": "none",
       "seed": 0}
RESTARTED, INTERRUPTED = "coordinator restarted", "interrupted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `tuner serve` process; ``marker`` is in the environment of it and of its Ray."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
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
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"})

    def wait_up(self, timeout: float = 120) -> None:
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

    def job(self, job_id: int) -> dict[str, Any]:
        return self.http.get(f"/v1/jobs/{job_id}").raise_for_status().json()

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


@pytest.fixture
def restart_env(tmp_path: Path) -> Callable[[str | None], dict[str, str]]:
    """The environment of a server on a fresh TUNER_HOME, with ``TUNER_DB_URL`` when given."""
    home = tmp_path / "home"
    base = {k: v for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "TUNER_DB_URL", "MLFLOW_TRACKING_URI", "TUNER_URL",
                         "TUNER_API_TOKEN", "TUNER_MAX_JOBS")}

    def make(db_url: str | None) -> dict[str, str]:
        env = base | {"TUNER_HOME": str(home), "TUNER_API_TOKEN": TOKEN, "COLUMNS": "120"}
        return env | ({"TUNER_DB_URL": db_url} if db_url else {})

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The jobs and studies database of the servers: a SQLite file, or a new PostgreSQL
    database (not the session's shared one: a server runs every queued job it finds)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'tuner.db'}"
        return
    request.applymarker(pytest.mark.postgres)
    base = sa.make_url(request.getfixturevalue("pg_url"))
    name = f"{base.database}_r{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts; whatever is left of them is killed at the end."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()
        else:
            server.reap(grace=10)


def submit_and_interrupt(server: Server, db_url: str) -> int:
    """Submit the job; return its id once trials are running and at least one finished."""
    response = server.http.post("/v1/jobs", json=JOB)
    assert response.status_code == 201, response.text
    job_id = int(response.json()["id"])
    deadline = time.monotonic() + 240
    while True:
        running, asked, finished = running_trials(db_url)
        # Not while a trial is being asked: see test_sigkill_while_a_trial_is_being_asked.
        if running >= 1 and asked == running and finished >= 1:
            return job_id
        assert server.process.poll() is None, server.log.read_text()
        state = server.job(job_id)["state"]
        assert state in ("queued", "running"), (
            f"job {job_id} is {state} before the test saw a trial running after one finished "
            f"(last seen: running, asked, finished = {running, asked, finished})")
        assert time.monotonic() < deadline, f"no trial ran within 240 s: {server.job(job_id)}"
        time.sleep(0.1)


def check_nothing_lost(job: dict[str, Any], db_url: str, tracking_uri: str,
                       *reasons: str) -> int:
    """The invariants of a resumed job; how many trials were lost (and re-run), each for
    one of ``reasons``."""
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


def sigkill_and_restart(env: dict[str, str], db_url: str, servers: list[Server],
                        log: Path, before_restart: Callable[[int], None] | None = None,
                        ) -> tuple[Server, dict[str, Any]]:
    """Start a server, submit the job, SIGKILL the server mid-job, start a new one; the new
    server and the job once it ended."""
    first = Server(env, log)
    servers.append(first)
    first.wait_up()
    job_id = submit_and_interrupt(first, db_url)
    first.kill()
    assert running_trials(db_url)[0] >= 1  # what the killed server left behind
    if before_restart is not None:
        before_restart(job_id)

    second = Server(env, log)
    servers.append(second)
    second.wait_up()
    job = second.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
                          timeout=300)
    return second, job


def test_sigkill_the_server_mid_job_and_start_it_again(
    db_url: str, restart_env: Callable[[str | None], dict[str, str]], servers: list[Server],
    tmp_path: Path,
) -> None:
    env = restart_env(None if db_url.startswith("sqlite") else db_url)
    log = tmp_path / "serve.log"
    server, job = sigkill_and_restart(env, db_url, servers, log)
    lost = check_nothing_lost(job, db_url, f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
                              RESTARTED)
    assert lost >= 1
    states = [e["state"] for e in job["events"]]
    assert states == ["queued", "running", "queued", "running", "succeeded"], job["events"]
    assert server.stop() == 0, log.read_text()
    assert server.reap() == [], "the server's Ray outlived its graceful stop"


def test_sigkill_while_a_trial_is_being_asked(
    restart_env: Callable[[str | None], dict[str, str]], servers: list[Server],
    tmp_path: Path,
) -> None:
    """A SIGKILL can land inside ``study.ask``, which writes a trial's parameters one by one:
    the trial is RUNNING with some parameters only. The kill is made at a quiet moment and
    such a trial added to a study before the restart (what a kill inside ``ask`` leaves)."""
    import search_spaces

    db_url = f"sqlite:///{tmp_path / 'home' / 'tuner.db'}"

    def half_ask(job_id: int) -> None:
        study = optuna.load_study(study_name=f"job-{job_id}-adam", storage=db_url)
        lr = search_spaces.load("adam").distributions()["lr"]
        assert study.ask({"lr": lr}).params.keys() == {"lr"}

    log = tmp_path / "serve.log"
    _, job = sigkill_and_restart(restart_env(None), db_url, servers, log, half_ask)
    assert job["state"] == "succeeded", (job["error"], log.read_text())
    check_nothing_lost(job, db_url, f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}", RESTARTED)


def test_sigterm_the_server_mid_job_and_start_it_again(
    restart_env: Callable[[str | None], dict[str, str]], servers: list[Server],
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'home' / 'tuner.db'}"
    env = restart_env(None)
    log = tmp_path / "serve.log"
    first = Server(env, log)
    servers.append(first)
    first.wait_up()
    job_id = submit_and_interrupt(first, db_url)
    assert first.stop() == 0, log.read_text()
    assert first.reap() == [], "the server's Ray outlived its graceful stop"
    # The stop ended its trials itself: none is left RUNNING for the next server to find.
    assert running_trials(db_url)[0] == 0
    assert "tuner server stopped" in log.read_text()

    second = Server(env, log)
    servers.append(second)
    second.wait_up()
    job = second.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
                          timeout=300)
    lost = check_nothing_lost(job, db_url, f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
                              INTERRUPTED)
    assert lost >= 1
    states = [e["state"] for e in job["events"]]
    assert states == ["queued", "running", "queued", "running", "succeeded"], job["events"]
    assert second.stop() == 0, log.read_text()
    assert second.reap() == []
    assert "Traceback" not in log.read_text()
