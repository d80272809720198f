"""How long a 3-trial x 3-epoch job takes on each task, through `tuner run`.

Each task runs one job in a fresh `python -m tuner.cli run` subprocess with a fresh store
(TUNER_HOME in a temporary folder): one optimizer (adam), 3 trials of 3 epochs, the default
3 final re-runs, 2 trials at a time. It prints the wall time of the whole command (start-up,
Ray, MLflow, data, training, report) and the training time the workers reported, and writes
`results/tasks-<date>-<time>.json`. The machine's load average is recorded beside them: on a
shared machine the figures grow with it.

    python benchmarks/bench_tasks.py [--tasks cartpole-reinforce text-transformer vowels-cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"cartpole-reinforce": ("val_return", "max"), "text-transformer":
           ("val_perplexity", "min"), "vowels-cnn": ("val_accuracy", "max")}


def run(task: str, *, trials: int, epochs: int) -> dict:
    metric, mode = METRICS.get(task, ("val_loss", "min"))
    with tempfile.TemporaryDirectory() as folder:
        job = {"name": f"bench-{task}", "task": task, "optimizers": ["adam"], "trials": trials,
               "epochs": epochs, "metric": metric, "mode": mode, "max_concurrent": 2}
        (Path(folder) / "job.yaml").write_text(yaml.safe_dump(job))
        env = {**os.environ, "TUNER_HOME": str(Path(folder) / "home"),
               "PYTHONPATH": str(ROOT)}
        for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
            env.pop(key, None)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tuner.cli", "run", "job.yaml"],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{task}: tuner run failed:\n{done.stdout}\n{done.stderr}")
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{folder}/home/tuner.db")
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT result FROM tuner_jobs")).scalar()
        assert stored is not None, f"{task}: no result stored"
        result = json.loads(stored)
        engine.dispose()
        adam = (result.get("optimizers") or {}).get("adam")
        train = None
        if adam is not None:
            train = sum(t["seconds"] for t in adam["trials"]) + sum(
                sum(s for s in f["curves"]["seconds"] if s) for f in adam["finals"])
        return {"task": task, "trials": trials, "epochs": epochs, "wall_s": round(wall, 1),
                "train_s": None if train is None else round(train, 1),
                "loadavg_1min": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(METRICS))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rows = [run(task, trials=args.trials, epochs=args.epochs) for task in args.tasks]
    print(f"{'task':22} {'wall':>8} {'train':>8} {'load':>6}")
    for row in rows:
        print(f"{row['task']:22} {row['wall_s']:7.1f}s {row['train_s'] or 0:7.1f}s "
              f"{row['loadavg_1min']:6.1f}")
    out = ROOT / "benchmarks" / "results" / time.strftime("tasks-%Y-%m-%d-%H%M%S.json")
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
