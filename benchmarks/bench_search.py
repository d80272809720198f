"""What the sampler learns from divergence, and what the learning-rate range test saves.

DeepOBS's protocol on its ``quadratic_deep`` problem (``task: quadratic-deep``): the rate
alone is tuned over DeepOBS's [1e-5, 1e2], batch 128, constant rate, no weight decay, for
mini-batch SGD and Momentum (0.99); 20 TPE trials of 3 epochs per optimizer, the same seeds.
Three ways, each a fresh job in a fresh store:

  fail         a diverged trial is told to Optuna as FAIL (``diverged_as: fail``)
  worst        a diverged trial is told as the study's worst value (the default)
  worst+range  the same, after a learning-rate range test (``lr_range_test: true``)

For each: the share of trials that diverged after TPE's start-up trials, the best validation
loss found, and the wall time of the job (the range test included).

Usage::

    python benchmarks/bench_search.py [--seeds 0 1 2] [--trials 20] [--epochs 3]

Prints a table (medians over the seeds) and writes benchmarks/results/search-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STARTUP = 5  # TPE's random start-up trials after trial 0 (tuner.engine.studies)
WIDE = {"lr": {"low": 1.0e-5, "high": 1.0e+2}, "batch_size": {"choices": [128]},
        "weight_decay": {"choices": [0.0]}, "lr_decay": {"choices": [0.0]}}
WAYS: dict[str, dict[str, Any]] = {
    "fail": {"diverged_as": "fail"}, "worst": {"diverged_as": "worst"},
    "worst+range": {"diverged_as": "worst", "lr_range_test": True},
}


def _child(way: str, seed: int, trials: int, epochs: int) -> dict[str, Any]:
    from tuner.config import get_settings
    from tuner.engine.jobs import create_local_job, run_job
    from tuner.spec import parse_job

    spec = parse_job({
        "name": f"search-{way}", "task": "quadratic-deep", "optimizers": ["minibatch", "momentum"],
        "trials": trials, "epochs": epochs, "metric": "val_loss", "mode": "min",
        "sampler": "tpe", "pruner": "none", "seed": seed, "final_seeds": 0,
        "max_concurrent": 2, "reproducible": True, **WAYS[way],
        "space_overrides": {"minibatch": WIDE,
                            "momentum": {**WIDE, "momentum": {"choices": [0.99]}}},
    }, source="bench")
    settings = get_settings()
    started = time.perf_counter()
    job_id = create_local_job(settings, spec)
    outcome = run_job(settings, job_id, spec)
    out: dict[str, Any] = {"seconds": time.perf_counter() - started, "optimizers": {}}
    for name, result in outcome.results.items():
        after = [t for t in result.trials if t.number > STARTUP]
        out["optimizers"][name] = {
            "diverged_after_startup": sum(t.state == "DIVERGED" for t in after),
            "after_startup": len(after),
            "best": result.best_value,
            "best_lr": (result.hyperparameters or {}).get("lr"),
            "searched_high": (outcome.lr_range.get(name) or {}).get("searched_high"),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, seed = args.child[0], int(args.child[1])
        print(json.dumps(_child(way, seed, args.trials, args.epochs)))
        return

    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for seed in args.seeds:
        for way in WAYS:
            with tempfile.TemporaryDirectory(prefix="tuner-bench-search-") as home:
                env = {**os.environ, "TUNER_HOME": home}
                for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
                    env.pop(key, None)
                done = subprocess.run(
                    [sys.executable, __file__, "--child", way, str(seed), "--trials",
                     str(args.trials), "--epochs", str(args.epochs)],
                    env=env, cwd=home, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[way].append(result)
                print(f"seed {seed} {way:<12} {result['seconds']:6.1f} s  "
                      + "  ".join(f"{n}: {o['diverged_after_startup']}/{o['after_startup']} "
                                  f"diverged, best {o['best']:.4g}"
                                  for n, o in result["optimizers"].items()), flush=True)

    print(f"\nmedians over seeds {args.seeds} ({args.trials} trials x {args.epochs} epochs, "
          f"TPE; diverged: share of the trials after the {STARTUP} start-up trials)")
    print(f"{'way':<13}{'optimizer':<11}{'diverged':>9}{'best val_loss':>15}{'job s':>8}")
    for way, results in runs.items():
        for name in results[0]["optimizers"]:
            shares = [r["optimizers"][name]["diverged_after_startup"]
                      / r["optimizers"][name]["after_startup"] for r in results]
            bests = [r["optimizers"][name]["best"] for r in results]
            seconds = [r["seconds"] for r in results]
            print(f"{way:<13}{name:<11}{statistics.median(shares):>9.0%}"
                  f"{statistics.median(bests):>15.4g}{statistics.median(seconds):>8.1f}")
    out = HERE / "results" / f"search-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    print(f"\nwritten: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
