"""``tuner serve`` for real: a server subprocess (its own local Ray) on a free loopback port,
driven by the ``tuner`` CLI client and plain HTTP.

One server (TUNER_MAX_JOBS=1, so a second job waits in the queue) serves the module; its
SIGTERM exit is checked at the end: exit 0, Ray shut down.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.servers import TUNER, Server, free_port, server_env

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
SMALL = {"name": "small", "task": "digits-logreg", "optimizers": ["sgd", "adam"], "trials": 3,
         "epochs": 3, "final_seeds": 1, "max_concurrent": 2, "seed": 0}
LONG = {**SMALL, "name": "long", "trials": 200, "epochs": 30}


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([TUNER, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("service") / "home"
    # A Ray of its own: this module checks that a server starts and stops its Ray.
    env = server_env(home, None, TUNER_API_TOKEN=TOKEN, TUNER_MAX_JOBS="1")
    running = Server(env, home.parent / "serve.log")
    try:
        running.wait_up()
        yield running
    finally:
        code = running.stop(timeout=90)
    text = running.log.read_text()
    assert code == 0, text
    assert "tuner server stopped" in text
    assert "Traceback" not in text


def test_submit_wait_then_export_through_the_server(server: Server, tmp_path: Path) -> None:
    job_file = tmp_path / "small.yaml"
    job_file.write_text(yaml.safe_dump(SMALL))
    done = cli("submit", str(job_file), "--wait", env=server.client_env)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"job (\d+) submitted to http://127\.0\.0\.1:\d+ \(queued\)", done.stdout)
    assert match, done.stdout
    job_id = int(match.group(1))
    assert "best optimizer:" in done.stdout
    assert f"job {job_id} succeeded" in done.stdout
    job = server.job(job_id)
    assert job["state"] == "succeeded"
    assert job["progress"]["optimizers"]["adam"]["finished"] == 3

    export = cli("export", str(job_id), env=server.client_env)
    assert export.returncode == 0, export.stderr
    document = yaml.safe_load(export.stdout)
    assert document["job"] == job_id and set(document["optimizers"]) == {"sgd", "adam"}
    assert document["optimizers"]["adam"]["class"] == "torch.optim.Adam"
    as_json = server.http.get(f"/v1/jobs/{job_id}/export", params={"format": "json"}).json()
    assert as_json == document

    trials = server.http.get(f"/v1/jobs/{job_id}/trials").json()
    assert trials["total"] == 6
    assert {t["state"] for t in trials["items"]} == {"COMPLETE"}

    listed = cli("jobs", env=server.client_env)
    assert listed.returncode == 0 and "small" in listed.stdout and "succeeded" in listed.stdout
    status = cli("status", str(job_id), env=server.client_env)
    assert status.returncode == 0 and "succeeded" in status.stdout


def test_cancel_a_running_job_and_a_queued_one(server: Server) -> None:
    running = server.http.post("/v1/jobs", json=LONG).json()["id"]
    queued = server.http.post("/v1/jobs", json={**LONG, "name": "never"}).json()["id"]
    # Running, with trials under way (TUNER_MAX_JOBS=1 keeps the second one queued).
    server.wait_for(running, lambda j: j["state"] == "running" and any(
        p["finished"] >= 1 for p in (j["progress"] or {}).get("optimizers", {}).values()),
        timeout=120)
    assert server.job(queued)["state"] == "queued"

    out = cli("cancel", str(queued), env=server.client_env)
    assert out.returncode == 0 and out.stdout.strip() == f"job {queued} cancelled"
    asked = time.monotonic()
    out = cli("cancel", str(running), env=server.client_env)
    assert out.returncode == 0, out.stderr
    assert "cancel requested" in out.stdout
    job = server.wait_for(running, lambda j: j["state"] == "cancelled", timeout=30)
    assert time.monotonic() - asked < 15
    assert job["finished_at"] is not None
    trials = server.http.get(f"/v1/jobs/{running}/trials", params={"limit": 1000}).json()
    assert trials["total"] >= 1
    assert "RUNNING" not in {t["state"] for t in trials["items"]}, trials

    never = server.job(queued)
    assert never["state"] == "cancelled" and never["started_at"] is None
    assert [e["state"] for e in never["events"]] == ["queued", "cancelled"]
    assert server.http.get(f"/v1/jobs/{queued}/trials").json()["total"] == 0
    again = cli("cancel", str(running), env=server.client_env)
    assert again.returncode == 1
    assert f"job {running} is cancelled; only a queued or running job can be cancelled" in \
        again.stderr


def test_the_client_refuses_module_paths_and_names_a_missing_server(
    server: Server, tmp_path: Path
) -> None:
    job_file = tmp_path / "mine.yaml"
    job_file.write_text(yaml.safe_dump({**SMALL, "task": "mypkg.tasks:build"}))
    out = cli("submit", str(job_file), env=server.client_env)
    assert out.returncode == 1
    assert (f"{job_file}: task: module paths are not accepted by the API; use a built-in or "
            "installed task (see GET /v1/tasks)") in " ".join(out.stderr.split())
    port = free_port()
    out = cli("jobs", "--server", f"http://127.0.0.1:{port}", env=server.client_env)
    assert out.returncode == 1
    assert " ".join(out.stderr.split()) == (
        f"error: cannot reach the tuner server at http://127.0.0.1:{port}: connection "
        "refused; is `tuner serve` running?"
    )
    wrong = server.client_env | {"TUNER_API_TOKEN": "wrong"}
    out = cli("cancel", "1", env=wrong)
    assert out.returncode == 1 and "invalid token" in out.stderr


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    out = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()),
              env=server_env(tmp_path / "home", None), timeout=60)
    assert out.returncode == 1
    assert " ".join(out.stderr.split()) == (
        "error: --host: refusing to serve on 0.0.0.0 without TUNER_API_TOKEN: anyone who "
        "reaches it could run jobs; set TUNER_API_TOKEN, or bind 127.0.0.1"
    )
