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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.integration.servers import Server, free_ports, processes_with, stop_processes

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


def clean_env() -> dict[str, str]:
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "TUNER_DB_URL", "MLFLOW_TRACKING_URI", "TUNER_URL", "TUNER_API_TOKEN")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"COLUMNS": "120"}


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
    env = cluster.env | {"TUNER_HOME": str(home), "RAY_ADDRESS": cluster.address,
                         "TUNER_API_TOKEN": API_TOKEN}
    log = tmp_path / "serve.log"
    server = Server(env, log)
    try:
        server.wait_up()
        job_file = tmp_path / "job.yaml"
        job_file.write_text(yaml.safe_dump(JOB))
        done = subprocess.run([TUNER, "submit", str(job_file), "--wait"],
                              env=server.client_env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()
        match = re.search(r"job (\d+) submitted", done.stdout)
        assert match, done.stdout
        job_id = int(match.group(1))
        assert f"job {job_id} succeeded" in done.stdout
    finally:
        code = server.stop(timeout=90)
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
