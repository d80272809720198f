"""Restart safety of `tuner serve` for real (issue 3, points 6 and 7).

A server subprocess (its own session, on the test run's Ray cluster; with a local Ray of its
own for the graceful stop, which must end it) runs a job whose trials the test holds in the
middle (:class:`~tests.integration.servers.Gate`); then the server is killed (SIGKILL of its
whole process group, on SQLite and on PostgreSQL) or stopped (SIGTERM, the graceful stop), the
gate is opened, and a new server on the same stores finishes the job.
Nothing is lost:

- each optimizer's study ends with exactly its trial budget of trials not lost; the trials that
  were running are FAIL with reason "coordinator restarted" (killed) or "interrupted" (stopped),
  and their configuration ran again (``rerun_of``);
- no Optuna trial and no MLflow run is left RUNNING;
- every Optuna trial has exactly one MLflow trial run with its number and state;
- the job's progress counts (``GET /v1/jobs/{id}``) agree with Optuna.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import optuna
import pytest

from tests.integration.servers import (
    TOKEN,
    Gate,
    Server,
    check_nothing_lost,
    running_trials,
    server_env,
    wait_mid_job,
)
from tests.ray_cluster import RayCluster

pytestmark = pytest.mark.integration

RESTARTED, INTERRUPTED = "coordinator restarted", "interrupted"


class RestartEnv(Protocol):
    """:func:`restart_env`'s maker of a server's environment."""

    def __call__(self, db_url: str | None, *, own_ray: bool = False) -> dict[str, str]: ...


@pytest.fixture
def restart_env(tmp_path: Path, ray_cluster: RayCluster) -> RestartEnv:
    """The environment of a server on a fresh TUNER_HOME, with ``TUNER_DB_URL`` when given;
    on the test run's Ray cluster, or with ``own_ray`` a local Ray of its own."""
    home = tmp_path / "home"

    def make(db_url: str | None, *, own_ray: bool = False) -> dict[str, str]:
        return server_env(home, None if own_ray else ray_cluster, TUNER_API_TOKEN=TOKEN,
                          **({"TUNER_DB_URL": db_url} if db_url else {}))

    return make


def submit_and_interrupt(server: Server, db_url: str, gate: Gate) -> int:
    """Submit the gated job; return its id once trials are running and at least one finished
    (the others are held at the gate)."""
    job_id = server.submit_gated(gate)
    wait_mid_job(server, job_id, db_url)
    return job_id


def sigkill_and_restart(env: dict[str, str], db_url: str, servers: list[Server],
                        log: Path, before_restart: Callable[[int], None] | None = None,
                        ) -> tuple[Server, dict[str, Any]]:
    """Start a server, submit the job, SIGKILL the server mid-job, start a new one; the new
    server and the job once it ended."""
    gate = Gate(log.parent / "code")
    first = Server(env, log)
    servers.append(first)
    first.wait_up()
    job_id = submit_and_interrupt(first, db_url, gate)
    first.kill()
    assert running_trials(db_url)[0] >= 1  # what the killed server left behind
    if before_restart is not None:
        before_restart(job_id)
    gate.open()

    second = Server(env, log)
    servers.append(second)
    second.wait_up()
    job = second.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
                          timeout=300)
    return second, job


def test_sigkill_the_server_mid_job_and_start_it_again(
    db_url: str, restart_env: RestartEnv, servers: list[Server],
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
    restart_env: RestartEnv, servers: list[Server],
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
    restart_env: RestartEnv, servers: list[Server],
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'home' / 'tuner.db'}"
    # Local Rays of their own: a graceful stop ends the server's Ray too.
    env = restart_env(None, own_ray=True)
    log = tmp_path / "serve.log"
    gate = Gate(tmp_path / "code")
    first = Server(env, log)
    servers.append(first)
    first.wait_up()
    job_id = submit_and_interrupt(first, db_url, gate)
    assert first.stop() == 0, log.read_text()
    assert first.reap() == [], "the server's Ray outlived its graceful stop"
    # The stop ended its trials itself: none is left RUNNING for the next server to find.
    assert running_trials(db_url)[0] == 0
    assert "tuner server stopped" in log.read_text()

    gate.open()
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
