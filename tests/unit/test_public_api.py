"""The public surface of ``tuner``: pinned, sorted, and light to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tuner

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "JobNotFoundError",
    "JobSpec",
    "JobStateError",
    "SearchSpaceError",
    "SpecError",
    "Task",
    "TaskError",
    "TaskFactory",
    "Trial",
    "TrialPruned",
    "TunerError",
    "load_job_file",
    "load_optimizer",
    "parse_job",
    "training_loop",
]


def test_all_is_pinned() -> None:
    assert tuner.__all__ == PUBLIC


def test_all_is_sorted() -> None:
    assert tuner.__all__ == sorted(tuner.__all__)


def test_every_public_name_exists() -> None:
    for name in tuner.__all__:
        assert getattr(tuner, name) is not None, name


def test_the_errors_form_one_tree() -> None:
    for name in ("JobNotFoundError", "JobStateError", "SearchSpaceError", "SpecError",
                 "TaskError", "TrialPruned"):
        assert issubclass(getattr(tuner, name), tuner.TunerError), name
    assert issubclass(tuner.SpecError, ValueError)
    assert issubclass(tuner.SearchSpaceError, ValueError)
    assert issubclass(tuner.TaskError, LookupError)
    assert issubclass(tuner.JobNotFoundError, LookupError)
    assert issubclass(tuner.JobStateError, RuntimeError)
    assert issubclass(tuner.TrialPruned, RuntimeError)


def test_import_tuner_stays_light() -> None:
    # A fresh interpreter: this test process has long imported everything.
    code = (
        "import json, sys, tuner; "
        "print(json.dumps(sorted(m for m in ('ray', 'mlflow', 'torch', 'fastapi', 'optuna') "
        "if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)

    assert json.loads(done.stdout) == []


def test_validating_a_job_stays_light() -> None:
    # The CLI validates a job file before it starts anything heavy.
    code = (
        "import json, sys, tuner; "
        "tuner.parse_job({'task': 'digits-mlp', 'optimizers': ['adam']}); "
        "print(json.dumps(sorted(m for m in ('ray', 'mlflow', 'torch', 'fastapi') "
        "if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)

    assert json.loads(done.stdout) == []
