"""Ray clusters of the tests, started with `ray start` as a user starts one.

:func:`start_cluster` starts a head (and, when asked, more nodes) with token authentication
(``RAY_AUTH_MODE=token`` and a random ``RAY_AUTH_TOKEN``) and a temp dir of its own, so it
lives beside any other Ray on the machine. Its processes are found by the token in their
environment and ended by process id, never with `ray stop` (which stops every Ray on the
machine).

The test run shares one such cluster (``ray_cluster`` in ``tests/conftest.py``): the
in-process jobs join it, and `tuner serve` subprocesses join it through ``RAY_ADDRESS``
(:func:`tests.integration.servers.server_env`). Starting a Ray is the slowest part of
starting a server; only the tests about a server's own Ray start one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_ports, processes_with, stop_processes

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

#: What a test run's environment may hold that names another Ray or store.
_DROPPED = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "TUNER_DB_URL", "MLFLOW_TRACKING_URI", "TUNER_URL", "TUNER_API_TOKEN")

# Prints the ids of the cluster's live nodes (a short-lived driver of its own).
_PROBE = """
import json, logging, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)
print(json.dumps(sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])))
"""


def clean_env() -> dict[str, str]:
    """The test run's environment without anything that names a Ray, store or server."""
    return {k: v for k, v in os.environ.items() if k not in _DROPPED} | {"COLUMNS": "120"}


@dataclass
class RayCluster:
    address: str
    #: What a driver of this cluster needs: RAY_ADDRESS and the token.
    env: dict[str, str]
    temp_dir: Path
    node_ids: list[str]
    log: Path

    @property
    def marker(self) -> str:
        """In the environment of every process of the cluster (and of no other)."""
        return f"RAY_AUTH_TOKEN={self.env['RAY_AUTH_TOKEN']}"

    def stop(self, *, started: bool = True) -> None:
        """End every process of the cluster; raise if one survives SIGKILL (or, when it
        ``started``, if none was found)."""
        procs = processes_with(self.marker)
        left = stop_processes(procs, grace=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert procs or not started, "no process of the test cluster was found to stop"
        assert not left, f"processes of the test cluster survived SIGKILL: {left}"
        assert processes_with(self.marker) == []


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run([RAY, "start", *args], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=180, start_new_session=True,
                              check=False)
    assert done.returncode == 0, log.read_text()


def _node_args(temp_dir: Path, num_cpus: int) -> list[str]:
    agent, grpc, metrics, runtime_env = free_ports(4)
    return [f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]


def start_cluster(log: Path, *, nodes: int = 1, num_cpus: int = 1,
                  token: str | None = None) -> RayCluster:
    """A head and ``nodes - 1`` more nodes of ``num_cpus`` logical CPUs each, with ``token``
    (a new one by default); returns once every node is alive. Their workers can import
    ``tests`` (the checkout is on their PYTHONPATH, as a user's folder is where tuner starts a
    local Ray).

    The token marks the cluster's processes: a cluster that shares it with other processes
    finds and ends those too when it stops.
    """
    token = token or secrets.token_hex(16)
    # Short: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="tuner-ray-", dir="/tmp"))
    port, dashboard = free_ports(2)
    address = f"127.0.0.1:{port}"
    driver = {"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = clean_env() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": path}
    cluster = RayCluster(address=address, env=driver, temp_dir=temp_dir, node_ids=[], log=log)
    try:
        _ray_start(["--head", f"--port={port}", "--include-dashboard=false",
                    f"--dashboard-port={dashboard}", *_node_args(temp_dir, num_cpus)], env, log)
        if nodes == 1:
            return cluster  # `ray start --head` returns with the head up
        for _ in range(nodes - 1):
            _ray_start([f"--address={address}", *_node_args(temp_dir, num_cpus)], env, log)
        deadline = time.monotonic() + 120
        while True:
            probe = subprocess.run([sys.executable, "-c", _PROBE, address], env=env,
                                   capture_output=True, text=True, timeout=120, check=False)
            node_ids = json.loads(probe.stdout.strip().splitlines()[-1]) \
                if probe.returncode == 0 else []
            if len(node_ids) == nodes:
                cluster.node_ids = node_ids
                return cluster
            assert time.monotonic() < deadline, (
                f"the cluster did not show {nodes} live nodes: {probe.stdout}{probe.stderr}\n"
                + log.read_text())
            time.sleep(1)
    except BaseException:
        cluster.stop(started=False)
        raise
