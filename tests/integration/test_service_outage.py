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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL
from tests.integration.test_service_restart import JOB, Server, running_trials
from tuner import store

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def admin(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def database(admin: sa.Engine, pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone (a server runs every job it finds)."""
    base = sa.make_url(pg_url)
    name = f"{base.database}_o{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
def serve(tmp_path: Path, database: str) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**extra: str) -> Server:
        import os

        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "TUNER_URL")}
        env |= {"TUNER_HOME": str(tmp_path / "home"), "TUNER_DB_URL": database,
                "TUNER_API_TOKEN": "restart-token", "TUNER_MAX_JOBS": "1", **extra}
        server = Server(env, tmp_path / "serve.log")
        started.append(server)
        server.wait_up()
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill()
        else:
            server.reap(grace=10)


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
    job_id = int(server.http.post("/v1/jobs", json=JOB).raise_for_status().json()["id"])
    deadline = time.monotonic() + 240
    while running_trials(database)[0] < 1:
        assert time.monotonic() < deadline, server.job(job_id)
        time.sleep(0.2)

    end = outage(admin, database)
    try:
        code, body = wait_health(server, lambda c, b: c == 503, timeout=30)
        assert body["status"] == "unavailable"
        assert any("jobs database" in p for p in body["problems"]), body
        # Longer than the server's retry budget (2 s): the job fails at its next database
        # call (a trial's tell, a progress write), which the log reports...
        deadline = time.monotonic() + 300
        while f"job {job_id}: failed after" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.5)
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

    from tests.integration.test_service_restart import TUNER

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

    from tests.integration.test_service_restart import TUNER, free_port

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
    from tests.integration.test_service_restart import RESTARTED, check_nothing_lost

    server = serve(TUNER_DB_RETRY_S="90")
    job_id = int(server.http.post("/v1/jobs", json=JOB).raise_for_status().json()["id"])
    deadline = time.monotonic() + 240
    while running_trials(database)[0] < 1:
        assert time.monotonic() < deadline, server.job(job_id)
        time.sleep(0.2)
    end = outage(admin, database)
    try:
        # Until the job has met the outage (a trial's tell), and no longer than 60 s.
        deadline = time.monotonic() + 60
        while "the database is away; pausing" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.5)
        assert health(server)[0] == 503
    finally:
        end()
    job = server.wait_for(job_id, lambda j: j["state"] != "running", timeout=600)
    assert job["state"] == "succeeded", (job, server.log.read_text()[-3000:])
    lost = check_nothing_lost(job, database, f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
                              RESTARTED)
    assert lost == 0
    assert [e["state"] for e in job["events"]] == ["queued", "running", "succeeded"]
    log = server.log.read_text()
    assert f"job {job_id}: " in log and ": the database answers again; going on" in log
    wait_health(server, lambda c, b: c == 200, timeout=60)
