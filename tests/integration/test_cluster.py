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

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from tests.integration.servers import Server
from tests.ray_cluster import RayCluster, clean_env, start_cluster

pytestmark = pytest.mark.integration

TUNER = str(Path(sys.executable).with_name("tuner"))
API_TOKEN = "cluster-token"
JOB: dict[str, Any] = {
    "name": "two-nodes", "task": "digits-logreg", "optimizers": ["sgd", "adam"], "trials": 6,
    "epochs": 3, "final_seeds": 1, "max_concurrent": 2, "pruner": "none",
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}, "seed": 0,
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """Two nodes of one CPU each (not the test run's cluster)."""
    started = start_cluster(tmp_path / "ray-start.log", nodes=2, num_cpus=1)
    try:
        yield started
    finally:
        started.stop()


def test_a_job_through_the_service_runs_trials_on_both_nodes(
    cluster: RayCluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = clean_env() | cluster.env | {"TUNER_HOME": str(home), "TUNER_API_TOKEN": API_TOKEN}
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
