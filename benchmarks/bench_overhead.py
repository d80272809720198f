"""Overhead of tuner vs. the Ray Tune script a user would write for the same work.

The same work, two ways, one after the other, each in a FRESH Python subprocess and a fresh
temporary folder (fresh SQLite Optuna/jobs DB, fresh SQLite MLflow store, both logging to
MLflow):

  tuner   tuner.spec.parse_job -> tuner.engine.jobs.create_local_job -> tuner.engine.jobs.run_job
          (one study, TPE, no pruner, max_concurrent 2, final_seeds 0)
  script  ray.tune.Tuner(function trainable, OptunaSearch, num_samples=N,
          max_concurrent_trials=2, MLflowLoggerCallback), Tune's defaults otherwise

plus, for reference, "train": the N trials' training loops alone, one after another in one
process (no Ray, no Optuna, no MLflow), summing the per-trial loop times.

Usage::

    python benchmarks/bench_overhead.py [--trials 20] [--epochs 20] [--optimizer adam]
                                        [--repeats 1] [--no-train-only] [--keep]

Prints a table (way, wall seconds of the whole subprocess, inner seconds after imports,
trials completed, training seconds summed over trials) with the ratio script / tuner, and
writes benchmarks/results/overhead-<date>.json. With --repeats > 1 the ways alternate and
the table shows medians.

The subprocess's inner time excludes interpreter start and the imports of torch, ray,
optuna, mlflow and tuner; ray.init, MLflow store creation and everything after are counted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METRIC, MODE = "val_loss", "min"


# ---------------------------------------------------------------------------------------------
# way (a): through tuner
# ---------------------------------------------------------------------------------------------


def _child_tuner(args: argparse.Namespace) -> dict[str, Any]:
    t_imp = time.perf_counter()
    import mlflow  # noqa: F401
    import ray
    import torch  # noqa: F401

    import search_spaces  # noqa: F401
    import tuner.engine.coordinator  # noqa: F401
    import tuner.engine.jobs as jobs
    import workers.actor  # noqa: F401
    from tuner.config import get_settings
    from tuner.spec import parse_job

    imports_s = time.perf_counter() - t_imp

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    settings = get_settings()
    spec = parse_job({
        "name": "bench-overhead",
        "task": "digits-mlp",
        "optimizers": [args.optimizer],
        "trials": args.trials,
        "epochs": args.epochs,
        "metric": METRIC,
        "mode": MODE,
        "sampler": "tpe",
        "pruner": "none",
        "seed": 0,
        "final_seeds": 0,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
        "max_concurrent": 2,
    }, source="bench")
    job_id = jobs.create_local_job(settings, spec)
    create_s = time.perf_counter() - t0
    t_run = time.perf_counter()
    outcome = jobs.run_job(settings, job_id, spec)
    run_job_s = time.perf_counter() - t_run
    inner = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    progress = outcome.progress.optimizers[args.optimizer]
    trials = outcome.results[args.optimizer].trials
    # The coordinator reports when each of its phases ended (seconds since it started):
    # read them as the time spent in each phase, in order.
    phases = {"jobs DB + Optuna tables (create_local_job)": create_s}
    previous = 0.0
    for name, at in outcome.phases.items():
        phases[f"coordinator: {name}"] = at - previous
        previous = at
    phases["recording: leaderboard, export, report, MLflow copy"] = run_job_s - outcome.seconds
    phases["run_job (total)"] = run_job_s
    t = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - t
    return {
        "inner_seconds": inner,
        "imports_seconds": imports_s,
        "trials_completed": progress.complete,
        "trials_other": progress.pruned + progress.diverged + progress.failed,
        "best": progress.best,
        "train_seconds": sum(t.seconds for t in trials),
        "shutdown_seconds": shutdown_s,
        "phases": phases,
        "phase_ends": dict(outcome.phases),
    }


# ---------------------------------------------------------------------------------------------
# way (b): the Ray Tune script a user would write instead
# ---------------------------------------------------------------------------------------------


def _trainable(config: dict[str, Any]) -> None:
    """A plain training loop: the digits MLP, torch.optim.Adam with the sampled settings."""
    import time

    import torch
    from ray import tune
    from torch.utils.data import TensorDataset

    from workers.tasks.digits import mlp

    task = mlp(0)
    model = task.model
    assert isinstance(task.train, TensorDataset) and isinstance(task.val, TensorDataset)
    X_train, y_train = task.train.tensors
    X_val, y_val = task.val.tensors
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config["lr"],
        betas=(1.0 - config["one_minus_beta1"], 1.0 - config["one_minus_beta2"]),
        eps=config["eps"], weight_decay=config["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.0 - config["lr_decay"])
    batch_size = config["batch_size"]
    generator = torch.Generator().manual_seed(0)
    train_seconds = 0.0
    for _epoch in range(1, config["epochs"] + 1):
        started = time.perf_counter()
        model.train()
        total = 0.0
        order = torch.randperm(len(X_train), generator=generator)
        for start in range(0, len(X_train), batch_size):
            index = order[start:start + batch_size]
            loss = task.loss(model(X_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        scheduler.step()
        model.eval()
        with torch.no_grad():
            outputs = model(X_val)
            val_loss = float(task.loss(outputs, y_val))
            val_accuracy = float(task.metrics["accuracy"](outputs, y_val))
        train_seconds += time.perf_counter() - started
        tune.report({
            "train_loss": total / len(X_train), "val_loss": val_loss,
            "val_accuracy": val_accuracy, "train_seconds": train_seconds,
            "torch_threads": torch.get_num_threads(),
        })


def _param_space(epochs: int) -> dict[str, Any]:
    """search_spaces/adam.yaml in Tune's terms (betas as one_minus_*, log-uniform)."""
    from ray import tune

    return {
        "lr": tune.loguniform(1e-5, 1e-1),
        "batch_size": tune.choice([32, 64, 128]),
        "one_minus_beta1": tune.loguniform(1e-3, 0.5),
        "one_minus_beta2": tune.loguniform(1e-4, 0.2),
        "eps": tune.loguniform(1e-10, 1.0),
        "weight_decay": tune.choice([0.0, 1e-6, 1e-5, 1e-4, 1e-3]),
        "lr_decay": tune.loguniform(1e-3, 1e-1),
        "epochs": epochs,
    }


def _child_script(args: argparse.Namespace) -> dict[str, Any]:
    if args.optimizer != "adam":
        raise SystemExit("the Ray Tune script is written for adam only")
    t_imp = time.perf_counter()
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import ray
    import torch  # noqa: F401
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    import workers.tasks.digits  # noqa: F401

    imports_s = time.perf_counter() - t_imp

    t0 = time.perf_counter()
    tuner = tune.Tuner(
        _trainable,
        param_space=_param_space(args.epochs),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric=METRIC, mode=MODE),
            num_samples=args.trials,
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(
            name="bench-overhead",
            storage_path=str(Path(os.environ["TUNER_HOME"]).resolve() / "ray_results"),
            verbose=0,
            callbacks=[MLflowLoggerCallback(
                tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
                experiment_name="bench-overhead",
            )],
        ),
    )
    results = tuner.fit()
    fit_s = time.perf_counter() - t0
    completed = 0
    train_s = 0.0
    threads = set()
    for i in range(len(results)):  # a ResultGrid is indexed (it declares no __iter__)
        result = results[i]
        metrics = result.metrics or {}
        if result.error is None and metrics.get("training_iteration") == args.epochs:
            completed += 1
        train_s += metrics.get("train_seconds", 0.0)
        if metrics:
            threads.add(metrics.get("torch_threads"))
    best_metrics = results.get_best_result(metric=METRIC, mode=MODE).metrics
    assert best_metrics is not None
    best = best_metrics[METRIC]
    inner = time.perf_counter() - t0
    t = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - t
    return {
        "inner_seconds": inner,
        "imports_seconds": imports_s,
        "trials_completed": completed,
        "trials_other": len(results) - completed,
        "errors": results.num_errors,
        "best": best,
        "train_seconds": train_s,
        "torch_threads": sorted(t for t in threads if t is not None),
        "shutdown_seconds": shutdown_s,
        "phases": {"Tuner.fit (incl. ray.init)": fit_s},
    }


# ---------------------------------------------------------------------------------------------
# reference: the training loops alone
# ---------------------------------------------------------------------------------------------


def _child_train(args: argparse.Namespace) -> dict[str, Any]:
    """N configurations of the space (random, seed 0), trained one after another with tuner's
    own trainer in one process, one torch thread (as on a 1-CPU worker)."""
    t_imp = time.perf_counter()
    import optuna
    import torch

    import search_spaces
    from workers.tasks.digits import mlp
    from workers.trainer import TrialRun, seed_everything

    imports_s = time.perf_counter() - t_imp
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_spaces.load(args.optimizer)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    mlp(0)  # load and cache the data, as a worker's describe() does
    per_trial = []
    for number in range(args.trials):
        trial = study.ask(space.distributions())
        config = space.optimizer_config(trial.params, train_size=1437).to_dict()
        started = time.perf_counter()
        seed_everything(number)
        run = TrialRun(mlp(number), config, seed=number, device=torch.device("cpu"))
        for _ in run.epochs(args.epochs):
            pass
        per_trial.append(time.perf_counter() - started)
    return {
        "inner_seconds": time.perf_counter() - t0,
        "imports_seconds": imports_s,
        "trials_completed": len(per_trial),
        "train_seconds": sum(per_trial),
        "per_trial_seconds": per_trial,
    }


CHILDREN = {"tuner": _child_tuner, "script": _child_script, "train": _child_train}


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


def _run_way(way: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{way}-"))
    home = folder / ".tuner"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "TUNER_DB_URL", "MLFLOW_TRACKING_URI", "TUNER_HOME")}
    env.update({
        "TUNER_HOME": str(home),
        "TUNER_DB_URL": f"sqlite:///{home / 'tuner.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
    })
    out = folder / "result.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", way, "--out", str(out),
               "--trials", str(args.trials), "--epochs", str(args.epochs),
               "--optimizer", args.optimizer]
    if args.profile and way == "tuner":
        command += ["--profile", str(Path(args.profile).resolve())]
    log = folder / "child.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(command, cwd=folder, env=env, stdout=handle,
                               stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if code != 0 or not out.exists():
        tail = log.read_text()[-4000:]
        raise SystemExit(f"{way} failed (exit {code}); log {log}:\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_seconds"] = wall
    if args.keep:
        result["folder"] = str(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _ratio(numerator: float | None, denominator: float | None) -> float:
    """Of two medians every run has (its wall and inner seconds)."""
    assert numerator is not None and denominator is not None
    return numerator / denominator


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-train-only", action="store_true",
                        help="skip the in-process training-only reference")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the tuner way's driver into FILE (pstats)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = CHILDREN[args.child](args)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
        return

    ways = ["tuner", "script"] + ([] if args.no_train_only else ["train"])
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in ways}
    for repeat in range(args.repeats):
        order = ways if repeat % 2 == 0 else ["script", "tuner", *ways[2:]]
        for way in order:
            result = _run_way(way, args)
            runs[way].append(result)
            print(f"[{repeat + 1}/{args.repeats}] {way:<6} wall {result['wall_seconds']:6.1f} s"
                  f"  inner {result['inner_seconds']:6.1f} s"
                  f"  trials {result['trials_completed']}", flush=True)

    summary = {way: {key: _median(rs, key) for key in
                     ("wall_seconds", "inner_seconds", "imports_seconds", "trials_completed",
                      "train_seconds")} for way, rs in runs.items()}
    ratio = _ratio(summary["script"]["wall_seconds"], summary["tuner"]["wall_seconds"])
    inner_ratio = _ratio(summary["script"]["inner_seconds"], summary["tuner"]["inner_seconds"])

    print()
    print(f"{args.trials} trials x {args.epochs} epochs, {args.optimizer}, "
          f"{args.repeats} run(s) each, medians")
    print(f"{'way':<8}{'wall s':>9}{'inner s':>9}{'trials':>8}{'train s':>9}")
    for way, s in summary.items():
        print(f"{way:<8}{s['wall_seconds']:>9.1f}{s['inner_seconds']:>9.1f}"
              f"{s['trials_completed']:>8.0f}{s['train_seconds']:>9.1f}")
    print(f"ratio script / tuner: wall {ratio:.2f}x, inner {inner_ratio:.2f}x "
          f"(tuner at {1 / ratio:.2f} of the script's wall time)")
    # Where tuner's time goes (medians): imports, then what the coordinator reports.
    phases = [r["phases"] for r in runs["tuner"]]
    print(f"\ntuner's phases (medians of {len(phases)}), seconds")
    print(f"  {'imports (torch, ray, optuna, mlflow, tuner)':<58}"
          f"{summary['tuner']['imports_seconds']:>7.2f}")
    for name in phases[0]:
        print(f"  {name:<58}{statistics.median(p[name] for p in phases):>7.2f}")
    ends = [r["phase_ends"] for r in runs["tuner"]]
    if ends and "first_trial" in ends[0]:
        first = statistics.median(e["first_trial"] for e in ends)
        print(f"  first trial dispatched {first:.2f} s after the coordinator started")
    loop = [(r["phase_ends"].get("done", 0.0) - r["phase_ends"].get("first_trial", 0.0))
            for r in runs["tuner"]]
    slots = 2  # max_concurrent of the bench job
    per_slot = [r["train_seconds"] / slots for r in runs["tuner"]]
    loop_s, slot_s = statistics.median(loop), statistics.median(per_slot)
    print(f"  trial loop {loop_s:.2f} s for {slot_s:.2f} s of training per worker slot "
          f"({loop_s / max(1e-9, slot_s):.2f}x)")
    if summary["tuner"]["trials_completed"] != summary["script"]["trials_completed"]:
        print("WARNING: the two ways completed different numbers of trials")

    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "args": {"trials": args.trials, "epochs": args.epochs, "optimizer": args.optimizer,
                 "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "summary": summary,
        "ratio_script_over_tuner_wall": ratio,
        "ratio_script_over_tuner_inner": inner_ratio,
        "runs": runs,
    }
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"overhead-{dt.date.today().isoformat()}.json"
    if path.exists():  # keep earlier runs of the day
        path = path.with_name(f"overhead-{dt.datetime.now():%Y-%m-%d-%H%M%S}.json")
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
