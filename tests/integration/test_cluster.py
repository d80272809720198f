"""A real two-node Ray cluster (issue 3, point 8): `tuner serve` joins it with RAY_ADDRESS.

Two nodes of one CPU each are started on this machine with `ray start --head` and
`ray start --address`, with token authentication (RAY_AUTH_MODE=token and a random
RAY_AUTH_TOKEN) and a temp dir of their own, so they live beside any other Ray on the machine
(the test session's, other test runs'). A job submitted with `tuner submit --wait` must have
trials on both nodes, as the `tuner.node_id` tags of its MLflow trial runs say.

The cluster is stopped by process id, never with `ray stop` (which stops every Ray process on
the machine): its processes are the ones whose environment holds this test's token.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
TUNER, RAY = str(BIN / "tuner"), str(BIN / "ray")
API_TOKEN = "cluster-token"
JOB = {"name": "two-nodes", "task": "digits-logreg", "optimizers": ["sgd", "adam"],
       "trials": 6, "epochs": 3, "final_seeds": 1, "max_concurrent": 2, "pruner": "none",
       "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}, "seed": 0}

# Prints the ids of the cluster's live nodes (a short-lived driver of its own).
PROBE = """
import json, logging, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)
print(json.dumps(sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])))
"""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while they are picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def clean_env() -> dict[str, str]:
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "TUNER_DB_URL", "MLFLOW_TRACKING_URI", "TUNER_URL", "TUNER_API_TOKEN")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"COLUMNS": "120"}


def _status(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _status(pid) not in (None, "Z")


def processes_with(marker: str) -> list[int]:
    """Ids of this user's live processes whose environment holds ``marker`` (``KEY=value``);
    Linux's /proc (Ray renames its workers' command lines, not their environment)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or another user's
        if needle in environ and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def stop_processes(pids: list[int], *, grace: float = 15.0) -> list[int]:
    """SIGTERM ``pids`` (raylets first, the GCS last, as `ray stop` does), SIGKILL what is
    left after ``grace`` seconds; the ids still alive after that (none, normally)."""

    def rank(pid: int) -> int:
        try:
            name = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            return 1
        return 0 if "raylet" in name else 2 if "gcs_server" in name else 1

    _signal(sorted(pids, key=rank), signal.SIGTERM)
    alive = _wait_gone(pids, grace)
    _signal(alive, signal.SIGKILL)
    return _wait_gone(alive, 10)


@dataclass
class Cluster:
    address: str
    env: dict[str, str]  # what a driver or node of this cluster needs (token included)
    temp_dir: Path
    node_ids: list[str]


def ray_start(args: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run([RAY, "start", *args], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=180, start_new_session=True,
                              check=False)
    assert done.returncode == 0, log.read_text()


def node_args(temp_dir: Path) -> list[str]:
    agent, grpc, metrics, runtime_env = free_ports(4)
    return ["--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    token = secrets.token_hex(16)
    marker = f"RAY_AUTH_TOKEN={token}"
    # Short: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="tuner-ray-", dir="/tmp"))
    env = clean_env() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port, dashboard = free_ports(2)
    address = f"127.0.0.1:{port}"
    log = tmp_path / "ray-start.log"
    try:
        ray_start(["--head", f"--port={port}", "--include-dashboard=false",
                   f"--dashboard-port={dashboard}", *node_args(temp_dir)], env, log)
        ray_start([f"--address={address}", *node_args(temp_dir)], env, log)
        deadline = time.monotonic() + 120
        while True:
            probe = subprocess.run([sys.executable, "-c", PROBE, address], env=env,
                                   capture_output=True, text=True, timeout=120, check=False)
            node_ids = json.loads(probe.stdout.strip().splitlines()[-1]) \
                if probe.returncode == 0 else []
            if len(node_ids) == 2:
                break
            assert time.monotonic() < deadline, (
                f"the cluster did not show 2 live nodes: {probe.stdout}{probe.stderr}\n"
                + log.read_text())
            time.sleep(1)
        yield Cluster(address=address, env=env, temp_dir=temp_dir, node_ids=node_ids)
    finally:
        procs = processes_with(marker)
        left = stop_processes(procs, grace=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert procs, "no process of the test cluster was found to stop"
        assert not left, f"processes of the test cluster survived SIGKILL: {left}"
        assert processes_with(marker) == []


def test_a_job_through_the_service_runs_trials_on_both_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    env = cluster.env | {"TUNER_HOME": str(home), "RAY_ADDRESS": cluster.address,
                         "TUNER_API_TOKEN": API_TOKEN, "TUNER_URL": url}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([TUNER, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                health = httpx.get(f"{url}/healthz", timeout=5).json()
                if health["coordinator"]["ray"] == "up":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        job_file = tmp_path / "job.yaml"
        job_file.write_text(yaml.safe_dump(JOB))
        done = subprocess.run([TUNER, "submit", str(job_file), "--wait"], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()
        match = re.search(r"job (\d+) submitted", done.stdout)
        assert match, done.stdout
        job_id = int(match.group(1))
        assert f"job {job_id} succeeded" in done.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            raise
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"job-{job_id}-{JOB['name']}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("tuner.level") == "trial"]
    assert len(trial_runs) == len(JOB["optimizers"]) * JOB["trials"]
    assert {r.data.tags["tuner.state"] for r in trial_runs} == {"COMPLETE"}
    per_node: dict[str, int] = {}
    for run in trial_runs:
        per_node[run.data.tags["tuner.node_id"]] = per_node.get(
            run.data.tags["tuner.node_id"], 0) + 1
        assert run.data.tags["tuner.device"] == "cpu"
        assert run.data.tags["tuner.node"]
    # One worker per node (each has one CPU, a worker asks for one): both ran trials.
    assert set(per_node) == set(cluster.node_ids), (per_node, cluster.node_ids)
    finals = [r for r in runs if r.data.tags.get("tuner.level") == "final"]
    assert len(finals) == len(JOB["optimizers"]) * JOB["final_seeds"]
    assert {r.data.tags.get("tuner.node_id") for r in finals} <= set(cluster.node_ids)
