"""A user's own task, ``package.module:factory``, from the folder tuner runs in: the CLI
validates it, and the Ray workers (other processes) import it too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

TASK = '''
import torch
from torch.utils.data import TensorDataset

from tuner import Task


def accuracy(outputs, targets):
    return (outputs.argmax(1) == targets).float().mean().item()


def build(seed: int) -> Task:
    """Two Gaussian blobs: a user's data, made here, not shipped by tuner."""
    generator = torch.Generator().manual_seed(0)  # the same data for every trial
    x = torch.randn(400, 2, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(seed)
    return Task(
        model=torch.nn.Linear(2, 2),
        train=TensorDataset(x[:300], y[:300]),
        val=TensorDataset(x[300:], y[300:]),
        loss=torch.nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy, "margin": lambda out, y: float(out.std())},
    )
'''


def test_a_users_task_runs_on_the_workers(tmp_path: Path) -> None:
    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    (tmp_path / "mytasks" / "blobs.py").write_text(TASK)
    job = {"name": "mine", "task": "mytasks.blobs:build", "optimizers": ["adam"],
           "trials": 2, "epochs": 3, "final_seeds": 1, "metric": "val_accuracy",
           "mode": "max", "max_concurrent": 1}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "TUNER_HOME": str(tmp_path / "home"), "COLUMNS": "160"}
    for key in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PYTHONPATH"):
        env.pop(key, None)

    result = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "run", "job.yaml"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "best optimizer: adam" in result.stdout
    export = yaml.safe_load((tmp_path / "home" / "exports" / "job-1.yaml").read_text())
    assert export["task"] == "mytasks.blobs:build"
    assert 0.0 <= export["optimizers"]["adam"]["score"]["best"] <= 1.0


def test_a_users_task_that_does_not_import_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    job = {"task": "nosuchpackage.tasks:build", "optimizers": ["adam"]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "TUNER_HOME": str(tmp_path / "home")}

    result = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "run", "job.yaml"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr == (
        "error: job.yaml: task: task 'nosuchpackage.tasks:build': cannot import module "
        "'nosuchpackage.tasks': No module named 'nosuchpackage'\n"
    )
    assert not (tmp_path / "home" / "tuner.db").exists()  # nothing stored
