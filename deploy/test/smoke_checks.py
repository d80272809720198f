"""The checks of deploy/smoke.sh against the running compose stack, from the host.

    smoke_checks.py wait-healthy --project P --services a,b --timeout S
    smoke_checks.py wait-trials JOB --finished N --timeout S --project P
    smoke_checks.py check-job JOB --job-file job.yaml [--restarted] --project P
    smoke_checks.py check-export best.yaml --job-file job.yaml --project P

The API is TUNER_URL (with TUNER_API_TOKEN), the MLflow server MLFLOW_URL. Containers are
found by podman-compose's labels. Each failure is one line naming what was expected and what
was found; the exit code is 1 then.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

LOST_REASONS = ("coordinator restarted", "interrupted")


class CheckFailed(Exception):
    """A check of the smoke test did not hold."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True,
                          text=True).stdout


def containers(project: str, service: str) -> list[str]:
    """Ids of the containers of one compose service (running or not)."""
    out = podman("ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={project}",
                 "--filter", f"label=io.podman.compose.service={service}")
    return out.split()


def inspect(container: str) -> dict[str, Any]:
    return json.loads(podman("inspect", container))[0]


def api() -> httpx.Client:
    return httpx.Client(base_url=os.environ["TUNER_URL"], timeout=30, headers={
        "Authorization": f"Bearer {os.environ['TUNER_API_TOKEN']}"})


def get_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}").raise_for_status().json()


# -- wait-healthy ------------------------------------------------------------------------------


def wait_healthy(project: str, services: list[str], timeout: float) -> None:
    """Run each service's healthcheck until it passes.

    podman runs healthchecks from systemd timers; without systemd (a container or a CI box)
    they never run by themselves, so they are run here (`podman healthcheck run`), which is
    also what `podman ps` then shows.
    """
    start = time.monotonic()
    pending = list(services)
    last: dict[str, str] = {}
    while pending:
        for service in list(pending):
            ids = containers(project, service)
            if not ids:
                last[service] = "no container"
                continue
            states = []
            for cid in ids:
                state = inspect(cid)["State"]
                if state.get("Status") != "running":
                    states.append(f"{state.get('Status')} (exit {state.get('ExitCode')})")
                    continue
                done = subprocess.run(["podman", "healthcheck", "run", cid],
                                      capture_output=True, text=True)
                states.append("healthy" if done.returncode == 0 else "starting")
            last[service] = ", ".join(states)
            if all(s == "healthy" for s in states):
                pending.remove(service)
                print(f"  {service}: healthy after {time.monotonic() - start:.0f} s", flush=True)
        if pending:
            check(time.monotonic() - start < timeout, "not healthy within "
                  f"{timeout:.0f} s: " + "; ".join(f"{s}: {last.get(s)}" for s in pending))
            time.sleep(3)


# -- wait-trials -------------------------------------------------------------------------------


def wait_trials(job_id: int, finished: int, timeout: float) -> None:
    """Wait until the job runs, has ``finished`` trials done and at least one running."""
    start = time.monotonic()
    with api() as client:
        while True:
            job = get_job(client, job_id)
            check(job["state"] in ("queued", "running"),
                  f"job {job_id} ended ({job['state']}) before the restart: {job.get('error')}")
            counts = ((job.get("progress") or {}).get("optimizers") or {}).values()
            done = sum(c["finished"] for c in counts)
            running = sum(c["running"] for c in counts)
            if job["state"] == "running" and done >= finished and running >= 1:
                print(f"  job {job_id}: {done} trials finished, {running} running", flush=True)
                return
            check(time.monotonic() - start < timeout,
                  f"job {job_id}: fewer than {finished} trials finished within {timeout:.0f} "
                  f"s ({done} finished, {running} running, {job['state']})")
            time.sleep(1)


# -- check-job ---------------------------------------------------------------------------------


def check_job(job_id: int, spec: dict[str, Any], project: str, restarted: bool) -> None:
    """The job succeeded with exactly its budget; its trials ran on the Ray worker
    container(s); the MLflow server holds one run per trial and per final run."""
    optimizers: list[str] = spec["optimizers"]
    budget, finals = int(spec["trials"]), int(spec["final_seeds"])
    with api() as client:
        job = get_job(client, job_id)
        check(job["state"] == "succeeded",
              f"job {job_id} is {job['state']}, expected succeeded: {job.get('error')}")
        page = client.get(f"/v1/jobs/{job_id}/trials", params={"limit": 1000})
        trials = page.raise_for_status().json()["items"]
    progress = job["progress"]["optimizers"]
    lost_total = 0
    for name in optimizers:
        mine = [t for t in trials if t["optimizer"] == name]
        lost = [t for t in mine if t["user_attrs"].get("reason") in LOST_REASONS]
        lost_total += len(lost)
        check(all(t["state"] in ("COMPLETE", "PRUNED", "FAIL") for t in mine),
              f"{name}: unfinished trials {[t['number'] for t in mine]}")
        check(len(mine) - len(lost) == budget,
              f"{name}: {len(mine) - len(lost)} trials counted (+{len(lost)} lost), "
              f"expected exactly the budget of {budget}")
        counts = progress[name]
        check(counts["finished"] == budget and counts["running"] == 0,
              f"{name}: progress {counts}, expected {budget} finished and none running")
        check(counts["lost"] == len(lost), f"{name}: progress lost {counts['lost']}, "
              f"Optuna has {len(lost)} trials lost to a restart")
        check(counts["final_done"] == counts["final_total"] == finals,
              f"{name}: final runs {counts['final_done']}/{counts['final_total']}, "
              f"expected {finals}")
        for t in lost:
            reruns = [u for u in mine if u["user_attrs"].get("rerun_of") == t["number"]]
            check(len(reruns) == 1, f"{name}: lost trial {t['number']} was re-run "
                  f"{len(reruns)} times, expected once")
    states = [e["state"] for e in job.get("events", [])]
    if restarted:
        check(states == ["queued", "running", "queued", "running", "succeeded"],
              f"job {job_id}: events {states}, expected the restart to requeue it once")
        print(f"  job {job_id}: requeued by the restart, {lost_total} trial(s) lost and "
              "re-run, exactly the budget per optimizer", flush=True)
    else:
        check(lost_total == 0, f"job {job_id}: {lost_total} trials lost without a restart")

    # Where the trials ran: the `tuner.node` tag is the worker actor's hostname.
    workers = {inspect(c)["Config"]["Hostname"] for c in containers(project, "ray-worker")}
    others = {inspect(c)["Config"]["Hostname"]
              for s in ("ray-head", "tuner") for c in containers(project, s)}
    check(bool(workers), "no ray-worker container")

    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=os.environ["MLFLOW_URL"])
    experiment = mlflow.get_experiment_by_name(f"job-{job_id}-{spec['name']}")
    check(experiment is not None,
          f"the MLflow server has no experiment job-{job_id}-{spec['name']}")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], max_results=5000)
    by_level: dict[str, list[Any]] = {}
    for run in runs:
        by_level.setdefault(run.data.tags.get("tuner.level", "?"), []).append(run)
    trial_runs, final_runs = by_level.get("trial", []), by_level.get("final", [])
    check(len(trial_runs) == len(trials),
          f"MLflow holds {len(trial_runs)} trial runs, Optuna {len(trials)} trials")
    check(len(final_runs) == finals * len(optimizers),
          f"MLflow holds {len(final_runs)} final runs, expected {finals * len(optimizers)}")
    check(len(by_level.get("job", [])) == 1, "MLflow holds no job run")
    check(not [r for r in runs if r.info.status == "RUNNING"], "MLflow runs left RUNNING")
    nodes = {r.data.tags.get("tuner.node") for r in trial_runs + final_runs}
    check(nodes <= workers, f"trials ran on {sorted(map(str, nodes))}, expected only the "
          f"ray-worker container(s) {sorted(workers)} (head and tuner: {sorted(others)})")
    print(f"  job {job_id}: succeeded; {len(trials)} trials and {len(final_runs)} final runs "
          f"in MLflow, all on the ray-worker container(s) {', '.join(sorted(workers))}",
          flush=True)


def check_export(path: Path, spec: dict[str, Any]) -> None:
    check(path.is_file() and path.stat().st_size > 0, f"no export at {path}")
    document = yaml.safe_load(path.read_text())
    text = json.dumps(document)
    missing = [name for name in spec["optimizers"] if name not in text]
    check(not missing, f"the export {path} names no config for {missing}")
    print(f"  export: {path.stat().st_size} bytes, a config for each of "
          f"{', '.join(spec['optimizers'])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    healthy = sub.add_parser("wait-healthy")
    healthy.add_argument("--services", required=True)
    healthy.add_argument("--timeout", type=float, default=300)
    trials = sub.add_parser("wait-trials")
    trials.add_argument("job", type=int)
    trials.add_argument("--finished", type=int, required=True)
    trials.add_argument("--timeout", type=float, default=300)
    job = sub.add_parser("check-job")
    job.add_argument("job", type=int)
    job.add_argument("--job-file", type=Path, required=True)
    job.add_argument("--restarted", action="store_true")
    export = sub.add_parser("check-export")
    export.add_argument("path", type=Path)
    export.add_argument("--job-file", type=Path, required=True)
    for p in (healthy, trials, job, export):
        p.add_argument("--project", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "wait-healthy":
            wait_healthy(args.project, args.services.split(","), args.timeout)
        elif args.command == "wait-trials":
            wait_trials(args.job, args.finished, args.timeout)
        elif args.command == "check-job":
            spec = yaml.safe_load(args.job_file.read_text())
            check_job(args.job, spec, args.project, args.restarted)
        else:
            check_export(args.path, yaml.safe_load(args.job_file.read_text()))
    except CheckFailed as e:
        print(f"smoke: FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
