"""How long until the first trial trains: `tuner run` on fresh stores, and `tuner serve`.

Three timings, each read off Optuna's own record of the first trial's start
(``datetime_start`` of the earliest trial of the job's studies), in a fresh temporary home:

  run          `tuner run job.yaml` as a user types it, from the process's start
  serve-cold   a job POSTed to a running `tuner serve` right after it came up
  serve-warm   a second job on the same task POSTed when the first has finished (the server
               keeps Ray, its imports and the last job's idle workers)

Usage::

    python benchmarks/bench_first_trial.py [--repeats 3]

Prints the medians and writes benchmarks/results/first-trial-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
JOB = {"name": "first", "task": "digits-mlp", "optimizers": ["adam", "sgd"], "trials": 4,
       "epochs": 2, "final_seeds": 0, "max_concurrent": 2}


def _first_start(db: Path, job_id: int) -> dt.datetime:
    import sqlite3

    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT min(t.datetime_start) FROM trials t JOIN studies s USING (study_id) "
            "WHERE s.study_name LIKE ?", (f"job-{job_id}-%",)).fetchone()
    return dt.datetime.fromisoformat(row[0])


#: Where the tuner under test is imported from (``--code``, e.g. a worktree of an older
#: commit, to compare before and after); the installed package when unset.
CODE: str | None = None


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TUNER_HOME": str(home)}
    if CODE:
        env["PYTHONPATH"] = CODE
    for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "TUNER_URL"):
        env.pop(key, None)
    return env


def time_run() -> float:
    with tempfile.TemporaryDirectory(prefix="tuner-bench-first-") as folder:
        home = Path(folder) / "home"
        job = Path(folder) / "job.yaml"
        job.write_text(yaml.safe_dump(JOB))
        started = dt.datetime.now()
        subprocess.run([sys.executable, "-m", "tuner.cli", "run", str(job)], env=_env(home),
                       cwd=folder, check=True, capture_output=True)
        return (_first_start(home / "tuner.db", 1) - started).total_seconds()


def time_serve() -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="tuner-bench-first-") as folder:
        home = Path(folder) / "home"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", "serve", "--port", str(port)], env=_env(home),
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    health = httpx.get(f"{base}/healthz", timeout=2).json()
                    if (health.get("coordinator") or {}).get("ray") == "up":
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("tuner serve did not come up within 180 s")
                time.sleep(0.2)
            timings = []
            for _ in range(2):
                submitted = dt.datetime.now()
                job = httpx.post(f"{base}/v1/jobs", json=JOB, timeout=30).json()
                while httpx.get(f"{base}/v1/jobs/{job['id']}", timeout=10).json()[
                        "state"] not in ("succeeded", "failed", "cancelled"):
                    time.sleep(0.2)
                first = _first_start(home / "tuner.db", job["id"])
                timings.append((first - submitted).total_seconds())
            return timings[0], timings[1]
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--code", help="import tuner from this folder (e.g. an older checkout)")
    parser.add_argument("--only-run", action="store_true", help="time `tuner run` only")
    args = parser.parse_args()
    global CODE
    CODE = str(Path(args.code).resolve()) if args.code else None
    found: dict[str, list[float]] = {"run": [], "serve-cold": [], "serve-warm": []}
    for repeat in range(args.repeats):
        found["run"].append(time_run())
        if args.only_run:
            print(f"[{repeat + 1}/{args.repeats}] run {found['run'][-1]:.2f} s", flush=True)
            continue
        cold, warm = time_serve()
        found["serve-cold"].append(cold)
        found["serve-warm"].append(warm)
        print(f"[{repeat + 1}/{args.repeats}] run {found['run'][-1]:.2f} s  serve cold "
              f"{cold:.2f} s  serve warm {warm:.2f} s", flush=True)
    print(f"\nseconds until the first trial starts (medians of {args.repeats})")
    summary: dict[str, Any] = {}
    for way, values in found.items():
        if not values:
            continue
        summary[way] = statistics.median(values)
        print(f"  {way:<11}{summary[way]:>7.2f}")
    out = HERE / "results" / f"first-trial-{dt.datetime.now():%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"job": JOB, "code": CODE, "runs": found, "medians": summary},
                              indent=2))
    print(f"written: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
