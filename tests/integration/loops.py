"""Training loops for the integration tests: Ray workers import them as
``tests.integration.loops:<name>`` (the worktree is on their PYTHONPATH).

``probe`` behaves by trial number (its seed minus the job's seed 0) so that one job shows
every outcome: numbers 2 diverges, 3 raises, 7 and 8 report a terrible loss (the median
pruner stops them); the others learn, better the closer lr is to 10^-2.5. Every way the loop
ends is appended to :data:`EVENTS` (the workers are other processes).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

import tuner

EVENTS = Path(tempfile.gettempdir()) / "tuner-test-loop-events.jsonl"


def _event(trial: tuner.Trial, event: str) -> None:
    with EVENTS.open("a") as f:
        f.write(json.dumps({"seed": trial.seed, "event": event,
                            "epochs": len(trial.reports)}) + "\n")


def events() -> list[dict]:
    return [json.loads(line) for line in EVENTS.read_text().splitlines()] if EVENTS.exists() \
        else []


@tuner.training_loop
def probe(trial: tuner.Trial) -> None:
    lr = float(trial.hyperparameters["lr"])
    model = torch.nn.Linear(1, 1)
    optimizer, _ = trial.build_optimizer(model.parameters())
    assert isinstance(optimizer, torch.optim.SGD)
    try:
        for epoch in range(1, trial.epochs + 1):
            if trial.seed == 2:
                loss = math.nan
            elif trial.seed in (7, 8):
                loss = 100.0 + epoch
            else:
                loss = abs(math.log10(lr) + 2.5) + 1.0 / epoch
            if trial.seed == 3 and epoch == 2:
                raise ValueError(f"lr {lr:.3g} is too high for this model")
            trial.report(epoch, val_loss=loss)
    except tuner.TrialPruned as e:
        _event(trial, type(e).__name__)
        raise
    _event(trial, "returned")


@tuner.training_loop
def quiet(trial: tuner.Trial) -> None:
    """Reports a metric under another name than the job's."""
    for epoch in range(1, trial.epochs + 1):
        trial.report(epoch, val_loss=1.0 / epoch)
