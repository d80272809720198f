"""`tuner serve` against a real PostgreSQL that goes away (issue 11, points 2 and 3).

The outage is made inside a test database of its own: ``ALTER DATABASE ... ALLOW_CONNECTIONS
false`` and ``pg_terminate_backend`` of its sessions (the server then can neither keep nor
open a connection), later allowed again; or the database is dropped and created anew.

- ``/healthz`` answers 503 naming the database while it is away, 200 once it is back;
- a job whose end could not be written while the database was away is written once it
  answers (``failed``; never a ``running`` zombie), and a ``running`` job that no thread of
  the server runs is ended, ``cancelled`` when a cancel was asked: a cancel always works;
- the coordinator loop survives its database vanishing (a ProgrammingError), says so in
  ``/healthz``, and claims jobs again once the tables are back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, new_database
from tests.integration.servers import (
    JOB,
    TOKEN,
    TUNER,
    Gate,
    Server,
    check_nothing_lost,
    free_port,
    server_env,
    wait_mid_job,
)
from tests.ray_cluster import RayCluster
from tuner import store

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def admin(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def database(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone (a server runs every job it finds)."""
    with new_database(pg_url) as url:
        yield url


def outage(admin: sa.Engine, url: str) -> Callable[[], None]:
    """Make the database refuse connections and drop the ones it has; the function that
    ends the outage."""
    name = sa.make_url(url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = :name AND pid <> pg_backend_pid()"),
                     {"name": name})

    def end() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    return end


@pytest.fixture
def serve(tmp_path: Path, database: str, servers: list[Server],
          ray_cluster: RayCluster) -> Callable[..., Server]:
    """Starts a server on ``database`` (one job at a time) with ``extra`` in its
    environment, once its Ray is up."""

    def start(**extra: str) -> Server:
        env = server_env(tmp_path / "home", ray_cluster, TUNER_DB_URL=database,
                         TUNER_API_TOKEN=TOKEN, TUNER_MAX_JOBS="1", **extra)
        server = Server(env, tmp_path / "serve.log")
        servers.append(server)
        server.wait_up()
        return server

    return start


def submit_and_hold(server: Server, database: str, gate: Gate) -> int:
    """Submit the gated job; its id once it is in the middle: a trial of each study done,
    the next ones held at ``gate``. Opening the gate ends them: their tells come next."""
    job_id = server.submit_gated(gate)
    wait_mid_job(server, job_id, database)
    return job_id


def health(server: Server) -> tuple[int, dict[str, Any]]:
    response = server.http.get("/healthz", timeout=30)
    return response.status_code, response.json()


def wait_health(server: Server, predicate: Callable[[int, dict[str, Any]], bool], *,
                timeout: float = 60) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = health(server)
        if predicate(code, body):
            return code, body
        assert time.monotonic() < deadline, (code, body, server.log.read_text()[-3000:])
        time.sleep(0.3)


def test_a_long_outage_mid_job_fails_it_cleanly_and_healthz_says_so(
    serve: Callable[..., Server], admin: sa.Engine, database: str, tmp_path: Path,
) -> None:
    server = serve(TUNER_DB_RETRY_S="2")
    assert health(server) == (200, health(server)[1])
    gate = Gate(tmp_path / "code")
    job_id = submit_and_hold(server, database, gate)

    end = outage(admin, database)
    gate.open()
    try:
        code, body = wait_health(server, lambda c, b: c == 503, timeout=30)
        assert body["status"] == "unavailable"
        assert any("jobs database" in p for p in body["problems"]), body
        # Longer than the server's retry budget (2 s): the job fails at its next database
        # call (a trial's tell, a progress write), which the log reports...
        server.wait_for_log(f"job {job_id}: failed after", timeout=300)
        assert health(server)[0] == 503
    finally:
        end()
    # ... and once the database answers, the jobs table says so (no running zombie).
    job = server.wait_for(job_id, lambda j: j["state"] != "running", timeout=120)
    assert job["state"] == "failed", job
    assert job["error"], job
    # Optuna and MLflow agree: nothing of the job is left RUNNING (or WAITING).
    import optuna
    from mlflow import MlflowClient

    deadline = time.monotonic() + 60
    while True:
        open_trials = [
            (name, t.number, t.state.name)
            for name in JOB["optimizers"]
            for t in optuna.load_study(study_name=f"job-{job_id}-{name}",
                                       storage=database).get_trials(deepcopy=False)
            if not t.state.is_finished()]
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name(f"job-{job_id}-{JOB['name']}")
        assert experiment is not None
        running_runs = [r.info.run_name for r in client.search_runs(
            [experiment.experiment_id], max_results=5000) if r.info.status == "RUNNING"]
        if not open_trials and not running_runs:
            break
        assert time.monotonic() < deadline, (open_trials, running_runs)
        time.sleep(0.5)
    code, body = wait_health(server, lambda c, b: c == 200, timeout=60)
    assert body["problems"] == [] and body["coordinator"]["unsettled"] == []
    assert body["coordinator"]["running"] == []
    # The server goes on: the next job is claimed.
    second = int(server.http.post("/v1/jobs", json=JOB).raise_for_status().json()["id"])
    server.wait_for(second, lambda j: j["state"] == "running", timeout=120)
    assert server.http.post(f"/v1/jobs/{second}/cancel").status_code == 200
    server.wait_for(second, lambda j: j["state"] == "cancelled", timeout=120)
    log = server.log.read_text()
    assert f"job {job_id}: recorded as failed" in log or f"job {job_id}: failed" in log


def test_a_running_job_no_thread_runs_is_ended_and_its_cancel_honoured(
    serve: Callable[..., Server], database: str,
) -> None:
    """What a lost end leaves (the API said running for ever, cancel did nothing): the
    loop ends such a job, cancelled when a cancel was asked."""
    server = serve()
    with store.session_scope(database) as session:
        zombie = store.create_job(session, name="zombie", task="digits-logreg",
                                  spec={**JOB, "task": "digits-logreg"}, origin="api",
                                  state=store.JobState.RUNNING)
        asked = store.create_job(session, name="asked", task="digits-logreg",
                                 spec={**JOB, "task": "digits-logreg"}, origin="api",
                                 state=store.JobState.RUNNING)
        session.flush()
        zombie_id, asked_id = zombie.id, asked.id
        store.request_cancel(session, asked_id)
    job = server.wait_for(zombie_id, lambda j: j["state"] != "running", timeout=30)
    assert job["state"] == "failed"
    assert job["error"] == ("the server's coordinator stopped running it without recording "
                            "its end (see the server log)")
    job = server.wait_for(asked_id, lambda j: j["state"] != "running", timeout=30)
    assert job["state"] == "cancelled", job
    assert job["events"][-1]["message"].startswith("cancelled (it had failed: "), job["events"]


def test_the_loop_survives_its_database_vanishing(
    serve: Callable[..., Server], admin: sa.Engine, database: str,
) -> None:
    server = serve()
    name = sa.make_url(database).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    code, body = wait_health(server, lambda c, b: c == 503 and any(
        "coordinator loop failed" in p for p in b["problems"]), timeout=60)
    assert body["coordinator"]["loop"] == "running"
    problem = next(p for p in body["problems"] if "coordinator loop failed" in p)
    assert "ProgrammingError" in problem and "tuner_jobs" in problem, problem

    # The operator migrates the new database; the same server claims jobs again.
    import subprocess

    env = {"TUNER_DB_URL": database, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([TUNER, "db", "upgrade"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    wait_health(server, lambda c, b: c == 200, timeout=60)
    job_id = int(server.http.post("/v1/jobs", json=JOB).raise_for_status().json()["id"])
    server.wait_for(job_id, lambda j: j["state"] == "running", timeout=120)
    assert server.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    server.wait_for(job_id, lambda j: j["state"] == "cancelled", timeout=120)
    assert "coordinator loop" in server.log.read_text()


def test_healthz_is_503_while_ray_is_unreachable_and_sigterm_is_quick(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TUNER_URL")}
    env |= {"TUNER_HOME": str(tmp_path / "home"), "TUNER_API_TOKEN": "t",
            "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    port = free_port()
    log = tmp_path / "ray.log"
    with log.open("w") as out:
        process = subprocess.Popen([TUNER, "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = env["RAY_ADDRESS"]
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        # Ray keeps trying to join (it may give up with an error): never "ok" meanwhile.
        for _ in range(3):
            body = response.json()
            assert response.status_code == 503, body
            assert body["status"] == "unavailable"
            assert (f"Ray is not up yet (joining RAY_ADDRESS={address})" in body["problems"]
                    or any(p.startswith("Ray: ") for p in body["problems"])), body
            time.sleep(1)
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        process.send_signal(signal.SIGTERM)
        # Within the 30 s of `docker stop`: not stuck behind the attempt to reach Ray.
        assert process.wait(timeout=25) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_short_outage_mid_job_is_ridden_out_with_the_exact_budget(
    serve: Callable[..., Server], admin: sa.Engine, database: str, tmp_path: Path,
) -> None:
    """The database goes away while trials run and comes back within TUNER_DB_RETRY_S: the
    job pauses at its next database call, goes on, and ends as if nothing had happened."""
    from tuner.engine.ledger import ASK_INTERRUPTED

    server = serve(TUNER_DB_RETRY_S="90")
    gate = Gate(tmp_path / "code")
    job_id = submit_and_hold(server, database, gate)
    end = outage(admin, database)
    gate.open()  # the held trials end while the database is away
    try:
        # Until the job has met the outage (a trial's tell), and no longer than 60 s.
        server.wait_for_log("the database is away; pausing", timeout=60)
        assert health(server)[0] == 503
    finally:
        end()
    job = server.wait_for(job_id, lambda j: j["state"] != "running", timeout=600)
    assert job["state"] == "succeeded", (job, server.log.read_text()[-3000:])
    # The job meets the outage at a tell, or at an ask: then that one trial, half written,
    # is lost and run again (test_an_outage_inside_ask_loses_that_trial_and_runs_it_again).
    lost = check_nothing_lost(job, database, f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
                              ASK_INTERRUPTED)
    assert lost <= 1
    assert [e["state"] for e in job["events"]] == ["queued", "running", "succeeded"]
    log = server.log.read_text()
    assert f"job {job_id}: " in log and ": the database answers again; going on" in log
    wait_health(server, lambda c, b: c == 200, timeout=60)


class _OutageInsideAsk:
    """A sampler (random, seeded) that takes the database away while ``study.ask`` writes a
    trial's parameters: after the first one, before the second; back after ``seconds``."""

    def __init__(self, admin: sa.Engine, url: str, *, seconds: float) -> None:
        import optuna

        self.base = optuna.samplers.RandomSampler(seed=0)
        self.admin, self.url, self.seconds = admin, url, seconds
        self.calls = 0

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        import threading

        self.calls += 1
        if self.calls == 2:
            threading.Timer(self.seconds, outage(self.admin, self.url)).start()
        return self.base.sample_independent(study, trial, name, distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        pass

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        pass


def test_an_outage_inside_ask_loses_that_trial_and_runs_it_again(
    admin: sa.Engine, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """``study.ask`` writes a trial RUNNING, then its parameters one by one; the database
    goes away between two of them. The ask is made again once the database answers, and
    the half-written trial ends as lost everywhere (Optuna, MLflow, the counts) with a
    re-run of its parameters: nothing of the job stays RUNNING and the budget is kept."""
    import logging

    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    import search_spaces
    from tuner.engine.ledger import ASK_INTERRUPTED, Ledger
    from tuner.engine.ride_out import ride_out
    from tuner.engine.studies import open_storage
    from tuner.spec import parse_job
    from tuner.tracking import JobTracker

    spec = parse_job({"task": "rosenbrock", "optimizers": ["adam"], "trials": 3, "epochs": 2})
    space = search_spaces.load("adam")
    assert len(space.distributions()) >= 2  # a parameter written before the outage, one after
    sampler = _OutageInsideAsk(admin, database, seconds=2.0)
    study = optuna.create_study(study_name="job-1-adam", storage=open_storage(database),
                                sampler=sampler)  # type: ignore[arg-type]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = JobTracker(tracking_uri, str(tmp_path / "artifacts"), job_id=1, job_name="ask")
    tracker.start(spec=spec.model_dump(mode="json"), optimizers=["adam"])
    ledger = Ledger(1, spec, studies={"adam": study}, spaces={"adam": space}, tracker=tracker,
                    started=time.monotonic())

    with caplog.at_level(logging.WARNING, logger="tuner.engine.coordinator"):
        slot = ride_out(lambda: ledger.begin_trial("adam", worker=None), url=database,
                        budget_s=60, what="job 1")
    assert "the database is away; pausing" in caplog.text
    trials = study.get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.FAIL),
                                                     (1, TrialState.RUNNING)]
    lost, rerun = trials
    assert lost.user_attrs["tuner_state"] == "LOST"
    assert lost.user_attrs["reason"] == ASK_INTERRUPTED
    assert 1 <= len(lost.params) < len(space.distributions())  # written before the outage
    assert rerun.user_attrs["rerun_of"] == 0 and rerun.params.items() >= lost.params.items()
    assert set(rerun.params) == set(space.distributions())
    assert slot.number == 1 and slot.trial is not None
    progress = ledger.progress.optimizers["adam"]
    assert (progress.lost, progress.running, progress.started) == (1, 1, 1)

    tracker.flush()
    runs = {int(r.data.tags["tuner.trial"]): r
            for r in MlflowClient(tracking_uri).search_runs(
                [tracker.experiment_id], filter_string="tags.`tuner.level` = 'trial'")}
    assert sorted(runs) == [0, 1]
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.tags["tuner.state"] == "FAIL"
    assert runs[0].data.tags["tuner.reason"] == ASK_INTERRUPTED
    assert runs[1].info.status == "RUNNING"
    tracker.close()
