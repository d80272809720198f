"""The compose deployment, checked without a Docker engine.

docker-compose.yml is parsed and held against what the code reads (the environment variables
of tuner/config.py and the server), the Dockerfile, .env.example and the PostgreSQL init
script in deploy/. When the docker CLI has its compose plugin, `docker compose config` also
validates the file (it parses only; no engine needed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"

SERVICES = {"postgres", "mlflow", "ray-head", "ray-worker", "tuner"}
# What the tuner package reads from its environment (tuner/config.py, the server).
TUNER_VARS = {"TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "TUNER_API_TOKEN",
              "TUNER_MAX_JOBS"}
# What Ray itself reads for token authentication (every node and driver of the cluster).
RAY_AUTH_VARS = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET")
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _documented_vars() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.add(line.split("=", 1)[0].strip())
    return names


def _source_text() -> str:
    files = [*(ROOT / "tuner").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def _all_strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _all_strings(key)
            yield from _all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_strings(item)
    elif isinstance(node, str):
        yield node


def test_the_five_services_exist(services: dict[str, Any]) -> None:
    assert SERVICES <= set(services), sorted(SERVICES - set(services))


def test_published_ports(services: dict[str, Any]) -> None:
    def published(name: str) -> set[str]:
        """Host port (its default when it is a ${VAR:-default}) of each published port."""
        ports = set()
        for p in services[name].get("ports", []):
            host = str(p).rsplit(":", 1)[0]
            host = VAR_RE.sub(lambda m: m.group(3) or "", host)
            ports.add(host.rsplit(":", 1)[-1])
        return ports

    def container(name: str) -> set[str]:
        return {str(p).rsplit(":", 1)[-1] for p in services[name].get("ports", [])}

    assert "8000" in published("tuner") and container("tuner") == {"8000"}
    assert "5000" in published("mlflow") and container("mlflow") == {"5000"}
    assert "8265" in published("ray-head") and container("ray-head") == {"8265"}
    # Workers publish nothing: `--scale ray-worker=N` would collide on host ports.
    assert not services["ray-worker"].get("ports")


def test_dependencies_wait_for_health(services: dict[str, Any]) -> None:
    def deps(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert deps("mlflow") == {"postgres": "service_healthy"}
    assert deps("ray-worker") == {"ray-head": "service_healthy"}
    assert deps("tuner") == {
        "postgres": "service_healthy",
        "mlflow": "service_healthy",
        "ray-head": "service_healthy",
    }


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name in SERVICES:
        test = services[name].get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
    joined = {name: " ".join(services[name]["healthcheck"]["test"]) for name in SERVICES}
    assert "pg_isready" in joined["postgres"]
    assert "localhost:5000/health" in joined["mlflow"]
    assert "ray status" in joined["ray-head"]
    assert "localhost:8000/healthz" in joined["tuner"]


def test_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    assert {"pgdata", "mlartifacts"} <= declared
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used <= declared, sorted(used - declared)
    assert any(v.startswith("pgdata:/var/lib/postgresql/data")
               for v in services["postgres"]["volumes"])
    assert any(v.startswith("mlartifacts:/mlartifacts") for v in services["mlflow"]["volumes"])


def test_ray_worker_reserves_nvidia_gpus(services: dict[str, Any]) -> None:
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and "count" in d
        for d in devices
    ), devices
    assert services["ray-worker"].get("shm_size")
    assert services["ray-head"].get("shm_size")
    assert "container_name" not in services["ray-worker"]  # scalable


def test_ray_commands(services: dict[str, Any]) -> None:
    head = " ".join(services["ray-head"]["command"])
    worker = " ".join(services["ray-worker"]["command"])
    assert "ray start --head" in head and "--port=6379" in head and "--block" in head
    assert "--dashboard-host=0.0.0.0" in head
    assert "ray start --address=ray-head:6379" in worker and "--block" in worker


def test_mlflow_server_on_postgres_with_served_artifacts(services: dict[str, Any]) -> None:
    command = [str(c) for c in services["mlflow"]["command"]]
    assert command[:2] == ["mlflow", "server"]
    uri = command[command.index("--backend-store-uri") + 1]
    assert uri.startswith("postgresql+psycopg://") and uri.endswith("@postgres:5432/mlflow")
    assert command[command.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert "--serve-artifacts" in command


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    for service_name, service in compose["services"].items():
        for key, value in _env(service).items():
            if any(word in key for word in SECRET_WORDS) and key != "RAY_AUTH_MODE":
                reference = VAR_RE.fullmatch(value)
                assert reference, f"{service_name}.{key} is not a ${{...}} reference"
                # Secrets are required: `${VAR:?message}`, never a default value.
                assert reference.group(2) == ":?", f"{service_name}.{key}"
    # Passwords inside URLs are references too.
    for text in _all_strings(compose):
        for match in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", text):
            assert VAR_RE.fullmatch(match.group(1)), f"literal password in {text!r}"


def test_every_variable_is_documented_in_env_example(compose: dict[str, Any]) -> None:
    used = {m.group(1) for text in _all_strings(compose) for m in VAR_RE.finditer(text)}
    documented = _documented_vars()
    assert used, "the compose file reads nothing from .env?"
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    # And .env.example lists nothing the compose file does not read.
    assert documented <= used, f"unused in docker-compose.yml: {sorted(documented - used)}"


def test_env_example_comments_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and "=" in line:
            assert i > 0 and lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_tuner_environment_is_what_the_code_reads(services: dict[str, Any]) -> None:
    env = _env(services["tuner"])
    assert set(env) - RAY_AUTH_VARS == TUNER_VARS
    assert RAY_AUTH_VARS <= set(env)
    source = _source_text()
    for name in TUNER_VARS:
        assert name in source, f"{name} is set for the tuner service but no code reads it"
    config = (ROOT / "tuner" / "config.py").read_text()
    for name in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "TUNER_API_TOKEN"):
        assert f'"{name}"' in config


def test_tuner_service_urls(services: dict[str, Any]) -> None:
    env = _env(services["tuner"])
    # psycopg 3: the PostgreSQL driver the package depends on.
    assert env["TUNER_DB_URL"].startswith("postgresql+psycopg://tuner:")
    assert env["TUNER_DB_URL"].endswith("@postgres:5432/tuner")
    assert "psycopg" in (ROOT / "pyproject.toml").read_text()
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # A GCS address: the tuner container joins the cluster as a zero-resource node first.
    assert env["RAY_ADDRESS"] == "ray-head:6379"
    assert env["RAY_AUTH_MODE"] == "token"
    for name in ("ray-head", "ray-worker"):
        ray_env = _env(services[name])
        assert ray_env["RAY_AUTH_MODE"] == "token"
        assert ray_env["RAY_AUTH_TOKEN"] == env["RAY_AUTH_TOKEN"]
    command = " ".join(services["tuner"]["command"])
    assert "tuner serve" in command and "--host 0.0.0.0" in command and "--port 8000" in command


def test_dockerfile(services: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    # The base image is a build argument; users get python:3.11-slim (deploy/smoke.sh builds
    # on a Debian bookworm image with Debian's Python 3.11 where no registry is reachable).
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert re.search(r"pip install [^\n]*\.\s", text), "the project is not installed"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "no non-root USER"
    assert "HEALTHCHECK" in text
    assert not re.search(r"(PASSWORD|TOKEN|SECRET)\s*=\s*\S", text, re.I)
    for name in ("mlflow", "ray-head", "ray-worker", "tuner"):
        build = services[name]["build"]
        context = ROOT / build["context"]
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert list(ROOT.glob(source)) or source.endswith("*"), f"COPY {source}: missing"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_postgres_init_script_creates_both_databases(services: dict[str, Any]) -> None:
    mounts = services["postgres"]["volumes"]
    init = [m for m in mounts if m.endswith("/docker-entrypoint-initdb.d:ro")]
    assert init, "no init script mounted"
    folder = ROOT / init[0].split(":", 1)[0]
    assert folder.resolve().is_relative_to(DEPLOY.resolve())
    text = "\n".join(p.read_text() for p in folder.iterdir() if p.suffix in (".sh", ".sql"))
    for db in ("tuner", "mlflow"):
        assert re.search(rf"CREATE DATABASE {db}\b", text), db
    env = _env(services["postgres"])
    for var in re.findall(r"\$([A-Z_]+_PASSWORD)", text):
        assert var in env, f"the init script reads {var}, which postgres does not get"


def test_entrypoint_script_is_executable() -> None:
    script = DEPLOY / "tuner-entrypoint.sh"
    assert script.stat().st_mode & 0o111
    assert 'ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0' in script.read_text()


def _compose_cli() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run([*command, "version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    command = _compose_cli()
    if command is None:
        pytest.skip("no docker compose CLI")
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "--project-directory", str(ROOT),
         "--env-file", str(tmp_path / ".env"), "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr


class _ComposeLoader(yaml.SafeLoader):
    """YAML of compose override files: `!reset` (Compose 2.24+, podman-compose 1.1+)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: "!reset")

CPU = ROOT / "docker-compose.cpu.yml"
SMOKE = DEPLOY / "test" / "compose.smoke.yml"


def test_cpu_variant_drops_the_gpu_reservation_only(services: dict[str, Any]) -> None:
    cpu = yaml.load(CPU.read_text(), Loader=_ComposeLoader)["services"]
    assert set(cpu) <= SERVICES
    assert cpu["ray-worker"]["deploy"] == "!reset"
    worker = " ".join(cpu["ray-worker"]["command"])
    assert "--num-gpus=0" in worker
    # The rest of the worker's command is the GPU file's.
    assert worker.replace(" --num-gpus=0", "") == " ".join(services["ray-worker"]["command"])
    for name in ("mlflow", "ray-head", "ray-worker", "tuner"):
        args = cpu[name]["build"]["args"]
        assert args["TORCH_REQUIREMENT"].endswith("+cpu")
        assert cpu[name]["build"]["dockerfile"] == "Dockerfile"
    # Ports, volumes, environment and dependencies stay docker-compose.yml's.
    for service in cpu.values():
        assert not {"ports", "volumes", "environment", "depends_on"} & set(service)


def test_smoke_override_swaps_only_the_postgres_image() -> None:
    smoke = yaml.safe_load(SMOKE.read_text())["services"]
    assert set(smoke) == {"postgres"}
    assert set(smoke["postgres"]) == {"image", "pull_policy"}
    assert smoke["postgres"]["image"].startswith("localhost/")


def test_compose_test_runs_the_smoke_script_and_always_tears_down() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^compose-test: setup\n\t.*deploy/smoke\.sh$", makefile, re.M)
    script = (DEPLOY / "smoke.sh")
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert "trap teardown EXIT" in text
    assert "down -v" in text
    for part in ("docker-compose.yml", "docker-compose.cpu.yml", "deploy/test/compose.smoke.yml",
                 "submit \"$WORK/job.yaml\" --wait", "podman restart"):
        assert part in text, part


def test_podman_compose_merges_the_cpu_variant(tmp_path: Path, services: dict[str, Any]) -> None:
    """podman-compose (the dev extra; it needs the podman binary) merges the two files as
    deploy/smoke.sh and deploy/README.md use them: `!reset` removes the GPU reservation."""
    compose_cli = Path(sys.executable).with_name("podman-compose")
    if not compose_cli.exists() or shutil.which("podman") is None:
        pytest.skip("no podman-compose or no podman")
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    done = subprocess.run(
        [str(compose_cli), "--env-file", str(tmp_path / ".env"), "-f", str(COMPOSE),
         "-f", str(CPU), "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)["services"]
    assert set(merged) == set(services)
    assert "deploy" not in merged["ray-worker"]
    assert "--num-gpus=0" in merged["ray-worker"]["command"]
    assert merged["tuner"]["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    assert merged["postgres"]["image"] == "postgres:16"
