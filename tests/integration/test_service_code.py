"""A user's own code through a real `tuner serve` with a token (issue 9, part 2).

`tuner submit job.yaml --code .` from a project folder packs it, uploads it (POST /v1/code)
and submits the job naming it; the server stores the archive in its jobs database and its
Ray workers run in it (runtime_env working_dir). The user's module records the id of every
process that imports it: the workers do, the server never does. A SIGKILL of the server
mid-job and a new server on the same stores finish the job with its code. Oversize and
unsafe archives are refused with 4xx and clear texts; a module that breaks on import fails
the job with the worker's message; ``requirements`` reach the workers through pip.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from tests.integration.servers import TOKEN, Server, server_env, wait_mid_job
from tests.ray_cluster import RayCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

TASK = '''
"""A user's task: two Gaussian blobs, made here (not shipped by tuner)."""
import os
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from tuner import Task

with open({marker!r}, "a") as out:  # who imported this module
    out.write(f"{{os.getpid()}}\\n")

SCALE = float((Path(__file__).parent / "scale.txt").read_text())  # data shipped with the code


def accuracy(outputs, targets):
    time.sleep({delay})  # a slower "model": the server can be killed in the middle
    return (outputs.argmax(1) == targets).float().mean().item()


def build(seed: int) -> Task:
    generator = torch.Generator().manual_seed(0)
    x = SCALE * torch.randn(300, 2, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(seed)
    return Task(model=torch.nn.Linear(2, 2), train=TensorDataset(x[:200], y[:200]),
                val=TensorDataset(x[200:], y[200:]), loss=torch.nn.CrossEntropyLoss(),
                metrics={{"accuracy": accuracy}})
'''


def make_project(folder: Path, marker: Path, *, delay: float = 0.0,
                 job: dict[str, Any] | None = None, extra: str = "") -> Path:
    """A user's project folder: a package, a data file, a job file, and what is left out."""
    package = folder / "mymodel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "blobs.py").write_text(extra + TASK.format(marker=str(marker), delay=delay))
    (package / "scale.txt").write_text("2.0")
    for left_out in (".git", ".venv", "__pycache__", ".tuner"):
        (folder / left_out).mkdir()
        (folder / left_out / "junk.bin").write_bytes(os.urandom(1000))
    (folder / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    job = job or {}
    (folder / "job.yaml").write_text(yaml.safe_dump({
        "name": "own-code", "task": "mymodel.blobs:build", "optimizers": ["adam"],
        "trials": 3, "epochs": 3, "final_seeds": 1, "metric": "val_accuracy", "mode": "max",
        "max_concurrent": 2, **job,
    }))
    return folder


def env_for(home: Path, ray: RayCluster | None = None, **extra: str) -> dict[str, str]:
    return server_env(home, ray, TUNER_API_TOKEN=TOKEN, COLUMNS="200", PYTHONPATH=str(ROOT),
                      **extra)


def submit(project: Path, server: Server, *extra: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tuner submit job.yaml --code . --server URL`, run in the project folder (a client
    that has none of the server's stores)."""
    client_env = env_for(project.parent / "client-home") | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", "submit", "job.yaml", "--code", ".",
         "--server", server.url, *extra],
        cwd=project, env=client_env, capture_output=True, text=True, timeout=300,
    )


def job_id_of(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stdout + result.stderr
    return int(result.stdout.split("job ")[1].split()[0])


def pids(marker: Path) -> set[int]:
    return {int(line) for line in marker.read_text().split()} if marker.exists() else set()


def test_own_code_runs_on_the_workers_never_in_the_server_and_survives_a_restart(
    tmp_path: Path, servers: list[Server], db_url: str, ray_cluster: RayCluster,
) -> None:
    home, marker = tmp_path / "home", tmp_path / "imported-by.txt"
    project = make_project(tmp_path / "project", marker, delay=0.03,
                           job={"trials": 6, "epochs": 12})
    env = env_for(home, ray_cluster) | (
        {} if db_url.startswith("sqlite") else {"TUNER_DB_URL": db_url})
    first = Server(env, tmp_path / "serve.log")
    servers.append(first)
    first.wait_up()

    result = submit(project, first)
    job_id = job_id_of(result)
    assert "code " in result.stderr and " uploaded: 4 files" in result.stderr, result.stderr
    job = first.job(job_id)
    sha = job["spec"]["code"]
    assert first.http.get(f"/v1/code/{sha}").json()["size"] > 0
    wait_mid_job(first, job_id, db_url)  # kill it once a trial finished and others run
    first.kill()
    # What a fresh container would have: the code is in the jobs database only.
    for path in (home / "code").glob("*.zip"):
        path.unlink()

    second = Server(env, tmp_path / "serve.log")
    servers.append(second)
    second.wait_up()
    job = second.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
                          timeout=300)

    assert job["state"] == "succeeded", (job, (tmp_path / "serve.log").read_text())
    assert [e["state"] for e in job["events"]] == [
        "queued", "running", "queued", "running", "succeeded"]
    importers = pids(marker)
    assert importers, "no worker imported the user's module"
    assert first.process.pid not in importers and second.process.pid not in importers
    assert (home / "code" / f"{sha}.zip").is_file()  # written again from the database
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment(job["mlflow_experiment_id"])
    runs = client.search_runs([experiment.experiment_id], "tags.`tuner.level` = 'trial'",
                              max_results=100)
    complete = [r for r in runs if r.data.tags["tuner.state"] == "COMPLETE"]
    assert len(complete) >= 6
    for run in complete:
        assert 0.0 <= run.data.metrics["val_accuracy"] <= 1.0
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert len(history) == 12
    assert second.stop() == 0


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory,
                 ray_cluster: RayCluster) -> Iterator[Server]:
    """A server whose code archives may be 64 KiB at most."""
    folder = tmp_path_factory.mktemp("small")
    server = Server(env_for(folder / "home", ray_cluster, TUNER_MAX_CODE_MB="0.0625"),
                    folder / "serve.log")
    try:
        server.wait_up()
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_oversize_and_unsafe_archives_are_refused(small_server: Server,
                                                  tmp_path: Path) -> None:
    http = small_server.http
    big = zip_of({"data.bin": os.urandom(100_000)})
    response = http.post("/v1/code", content=big, headers={"Content-Type": "application/zip"})
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "code: the archive is larger than this server's limit of 0.0625 MiB "
        "(TUNER_MAX_CODE_MB); leave data sets out of the code folder")

    evil = zip_of({"../../etc/cron.d/evil": b"* * * * * root rm -rf /"})
    response = http.post("/v1/code", content=evil, headers={"Content-Type": "application/zip"})
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "code: entry '../../etc/cron.d/evil': '..' is not allowed in a path (it would write "
        "outside the working directory)")

    no_token = httpx.post(f"{small_server.url}/v1/code", content=zip_of({"a.py": b""}),
                          headers={"Content-Type": "application/zip"})
    assert no_token.status_code == 401

    # The CLI refuses a folder over the server's cap with the server's text...
    project = make_project(tmp_path / "big", tmp_path / "marker.txt")
    (project / "weights.bin").write_bytes(os.urandom(200_000))
    result = submit(project, small_server)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the tuner server at {small_server.url} refused it: code: the archive is "
        "larger than this server's limit of 0.0625 MiB (TUNER_MAX_CODE_MB); leave data "
        "sets out of the code folder")
    # ... and one over its own cap before uploading anything, naming the biggest files.
    result = submit(project, small_server, env={"TUNER_MAX_CODE_MB": "0.0625"})
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: --code: '.' packs to 19"), result.stderr  # random bytes: ~197 KiB
    assert " KiB, over the limit of 64.0 KiB (TUNER_MAX_CODE_MB); biggest files: weights.bin " \
           "(195.3 KiB), mymodel/blobs.py (1.0 KiB), job.yaml (" in result.stderr, result.stderr
    assert "uploaded" not in result.stderr

    # Without --code, the CLI refuses a module path and says how to ship it.
    result = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "submit", "job.yaml", "--server", small_server.url],
        cwd=project, env=env_for(tmp_path / "client-home"), capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert " ".join(result.stderr.split()) == (
        "error: job.yaml: task: module paths are not accepted by the API; use a built-in or "
        "installed task (see GET /v1/tasks); or ship your code with it: tuner submit "
        "JOB.yaml --code DIR")

    # A module path without code: the API's refusal stays.
    response = http.post("/v1/jobs", json={"task": "mymodel.blobs:build",
                                           "optimizers": ["adam"]})
    assert response.status_code == 422
    assert [item["msg"] for item in response.json()["detail"]] == [
        "task: module paths are not accepted by the API; use a built-in or installed task "
        "(see GET /v1/tasks)"]


def test_code_with_a_built_in_task_is_shipped_with_a_warning(small_server: Server,
                                                            tmp_path: Path) -> None:
    project = make_project(tmp_path / "builtin", tmp_path / "marker.txt", job={
        "task": "digits-logreg", "metric": "val_loss", "mode": "min", "trials": 1,
        "epochs": 1, "final_seeds": 0, "max_concurrent": 1})

    result = submit(project, small_server)

    job = small_server.job(job_id_of(result))
    assert job["spec"]["code"]
    assert " ".join(result.stderr.split()).startswith(
        "warning: task 'digits-logreg' is not a package.module:factory path; the code in . is "
        "shipped, but only code the task imports uses it")
    small_server.wait_for(job["id"], lambda j: j["state"] == "succeeded", timeout=240)


def test_a_module_that_breaks_on_the_workers_fails_the_job_with_their_message(
    small_server: Server, tmp_path: Path,
) -> None:
    marker = tmp_path / "marker.txt"
    project = make_project(tmp_path / "broken", marker,
                           extra='raise RuntimeError("the GPU driver is missing")\n')

    job_id = job_id_of(submit(project, small_server))
    job = small_server.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed"),
                                timeout=240)

    assert job["state"] == "failed"
    assert job["error"] == (
        "TaskError: task 'mymodel.blobs:build': the workers cannot build it: RuntimeError: the "
        "GPU driver is missing (mymodel/blobs.py, line 1)"), job
    assert small_server.process.pid not in pids(marker)

    # A task that builds but does not report the job's metric: the workers say what it does.
    project = make_project(tmp_path / "other-metric", marker, job={"metric": "val_f1"})
    job_id = job_id_of(submit(project, small_server))
    job = small_server.wait_for(job_id, lambda j: j["state"] in ("succeeded", "failed"),
                                timeout=240)
    assert job["state"] == "failed"
    assert job["error"] == ("TaskError: metric: task 'mymodel.blobs:build' does not report "
                            "'val_f1'; it reports val_loss, train_loss, val_accuracy"), job
    assert small_server.process.pid not in pids(marker)


def test_requirements_are_installed_for_the_workers(small_server: Server,
                                                    tmp_path: Path) -> None:
    """`termcolor` is not in tuner's environment: pip installs it into the job's virtualenv
    (Ray's runtime_env pip) from the configured package index."""
    pytest.importorskip("virtualenv")
    marker = tmp_path / "marker.txt"
    project = make_project(
        tmp_path / "reqs", marker, job={"requirements": ["termcolor>=2"], "trials": 2},
        extra="import termcolor  # installed for the job only\n",
    )
    started = time.monotonic()

    job_id = job_id_of(submit(project, small_server, "--wait"))

    job = small_server.job(job_id)
    assert job["state"] == "succeeded", job
    assert job["spec"]["requirements"] == ["termcolor>=2"]
    print(f"job with requirements: {time.monotonic() - started:.0f} s")
