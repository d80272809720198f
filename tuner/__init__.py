"""tuner: which optimizer, with which settings, trains my model best?

The public surface. ``import tuner`` stays light: torch, Ray, MLflow and FastAPI load only
when a function that needs them runs.

Example::

    import tuner

    optimizer, scheduler = tuner.load_optimizer("best.yaml", model.parameters())

    @tuner.training_loop                 # your own loop: job file `task: mymodule:train`
    def train(trial: tuner.Trial) -> None:
        ...
        trial.report(epoch, val_loss=vl)  # raises tuner.TrialPruned when the trial stops
"""

from __future__ import annotations

from tuner.analysis.export import load_optimizer
from tuner.errors import (
    JobNotFoundError,
    JobStateError,
    SearchSpaceError,
    SpecError,
    TaskError,
    TrialPruned,
    TunerError,
)
from tuner.spec import JobSpec, load_job_file, parse_job
from tuner.task import Task, TaskFactory, training_loop
from tuner.trial import Trial

__all__ = [
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

__version__ = "0.1.0"
