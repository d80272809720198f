"""Learning-rate schedules: the search spaces' `schedule` and `warmup`, the torch schedulers
they build, and how they are exported."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

import search_spaces
from search_spaces import schedule_config
from tuner.analysis.export import render_export
from tuner.errors import SearchSpaceError
from tuner.optim import build_optimizer, scheduler_step

TRAIN_SIZE = 1437


def rates(scheduler_entry: dict, steps: int, lr: float = 0.1) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = build_optimizer(
        {"class": "torch.optim.SGD", "kwargs": {"lr": lr}, "scheduler": scheduler_entry},
        [param],
    )
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # type: ignore[union-attr]
    return out


def test_warmup_cosine_is_algoperfs_schedule_step_by_step() -> None:
    # Linear warm-up over W = 5% of the steps, then cosine decay to zero (docs/reference.md).
    epochs, per_epoch = 4, 25
    entry = schedule_config("warmup_cosine", warmup=0.05, epochs=epochs,
                            steps_per_epoch=per_epoch)
    total, warm = epochs * per_epoch, 5

    expected = [0.1 * ((k + 1) / (warm + 1) if k < warm
                       else 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm))))
                for k in range(total)]

    assert entry is not None
    assert entry["step"] == "batch"
    assert entry["class"] == "torch.optim.lr_scheduler.SequentialLR"
    assert rates(entry, total) == pytest.approx(expected, abs=1e-12)


def test_warmup_cosine_without_batches_per_epoch_steps_per_epoch() -> None:
    entry = schedule_config("warmup_cosine", warmup=0.0, epochs=10)

    assert entry == {"class": "torch.optim.lr_scheduler.CosineAnnealingLR",
                     "kwargs": {"T_max": 10, "eta_min": 0.0}, "step": "epoch"}
    assert scheduler_step({"scheduler": entry}) == "epoch"


def test_exponential_and_constant() -> None:
    assert schedule_config("exponential", lr_decay=0.03) == {
        "class": "torch.optim.lr_scheduler.ExponentialLR", "kwargs": {"gamma": 0.97},
        "step": "epoch",
    }
    assert schedule_config("exponential", lr_decay=0.0) is None
    assert schedule_config("constant", lr_decay=0.5) is None
    assert scheduler_step({"scheduler": None}) == "epoch"


def test_an_unknown_schedule_is_named() -> None:
    with pytest.raises(ValueError) as info:
        schedule_config("linear")
    assert str(info.value) == (
        "schedule: unknown schedule 'linear'; allowed: exponential, warmup_cosine, constant"
    )


def test_the_shipped_spaces_keep_their_distributions_and_exponential_decay() -> None:
    # The demo's numbers do not move: no space samples a schedule unless a job asks.
    for name in search_spaces.available():
        space = search_spaces.load(name)
        assert "schedule" not in space.params and "warmup" not in space.params, name
        assert "schedule" not in space.distributions() and "warmup" not in space.distributions()


def test_a_job_searches_the_schedule_through_space_overrides() -> None:
    space = search_spaces.load("adamw", {"schedule": {"choices": ["exponential", "warmup_cosine"]},
                                         "warmup": {"low": 0.02, "high": 0.1}})

    distributions = space.distributions()
    schedule, warmup = distributions["schedule"], distributions["warmup"]
    assert isinstance(schedule, CategoricalDistribution) and isinstance(warmup, FloatDistribution)
    assert schedule.choices == ("exponential", "warmup_cosine")
    assert (warmup.low, warmup.high) == (0.02, 0.1)

    point = {**space.defaults(train_size=TRAIN_SIZE), "schedule": "warmup_cosine",
             "warmup": 0.05, "batch_size": 64}
    config = space.optimizer_config(point, train_size=TRAIN_SIZE, epochs=20).to_dict()
    steps = 20 * math.ceil(TRAIN_SIZE / 64)
    assert config["scheduler"]["step"] == "batch"
    linear, cosine = config["scheduler"]["kwargs"]["schedulers"]
    assert linear["kwargs"]["total_iters"] == round(0.05 * steps)
    assert cosine["kwargs"]["T_max"] == steps - round(0.05 * steps)
    assert space.hyperparameters(point, train_size=TRAIN_SIZE)["schedule"] == "warmup_cosine"


def test_one_schedule_choice_fixes_it_with_the_default_warmup() -> None:
    space = search_spaces.load("adam", {"schedule": {"choices": ["warmup_cosine"]}})

    assert "schedule" not in space.distributions()
    point = space.defaults(train_size=TRAIN_SIZE)
    config = space.optimizer_config(point, train_size=TRAIN_SIZE, epochs=10).to_dict()
    assert config["scheduler"]["kwargs"]["milestones"] == [
        round(0.05 * 10 * math.ceil(TRAIN_SIZE / point["batch_size"]))
    ]


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"schedule": {"choices": ["linear"]}},
         "space_overrides.adam.schedule: choices: schedule must be one of exponential, "
         "warmup_cosine, constant, but got 'linear'"),
        ({"warmup": {"low": 0.5, "high": 1.5}},
         "space_overrides.adam.warmup: high: warmup is a fraction of the steps in [0, 1), but "
         "got 1.5"),
        ({"schedule": {"low": 0.1}},
         "space_overrides.adam.schedule: schedule is categorical in search_spaces/adam.yaml; "
         "use choices: [...] instead of low"),
    ],
)
def test_bad_schedule_overrides_are_named(override: dict, problem: str) -> None:
    assert search_spaces.validate_overrides("adam", override) == [problem]
    with pytest.raises(SearchSpaceError):
        search_spaces.load("adam", override)


def test_the_export_says_when_to_step_and_loads_back() -> None:
    entry = schedule_config("warmup_cosine", warmup=0.1, epochs=2, steps_per_epoch=10)
    document: dict[str, Any] = {
        "job": 3, "task": "digits-mlp", "metric": {"name": "val_loss", "mode": "min"},
        "best": "adamw",
        "optimizers": {"adamw": {
            "class": "torch.optim.AdamW", "kwargs": {"lr": 0.001, "weight_decay": 0.01},
            "batch_size": 64, "scheduler": entry,
            "score": {"best": 0.1, "mean": 0.1, "std": 0.0, "seeds": 1}, "trial": 0,
            "mlflow_run_id": None,
        }},
    }

    assert yaml.safe_load(render_export(document, "yaml")) == document
    python = render_export(document, "python")
    assert "    # call scheduler.step() once per batch (after every optimizer.step())" in python
    namespace: dict = {}
    exec(compile(python, "export.py", "exec"), namespace)  # our own output
    model = torch.nn.Linear(2, 1)
    optimizer, scheduler = namespace["make_best"](model.parameters())
    assert isinstance(scheduler, torch.optim.lr_scheduler.SequentialLR)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001 / 3)  # W = 2: 1/(W+1)

    from tuner import load_optimizer

    optimizer, scheduler = load_optimizer(document, model.parameters())
    assert isinstance(scheduler, torch.optim.lr_scheduler.SequentialLR)
    assert scheduler_step(document["optimizers"]["adamw"]) == "batch"
