"""One trial (workers.trainer): the epoch loop on real built-in tasks, no Ray."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from tests.datasets import tensor_dataset
from tuner.optim import build_optimizer
from tuner.task import Task
from workers.tasks.digits import logreg
from workers.tasks.landscapes import rosenbrock
from workers.trainer import TrialRun, seed_everything

CPU = torch.device("cpu")
SGD = {"class": "torch.optim.SGD", "kwargs": {"lr": 0.1}, "batch_size": 64, "scheduler": None}


def run(config: dict[str, Any], *, seed: int = 0, epochs: int = 3,
        factory: Any = logreg) -> list[Any]:
    seed_everything(seed)
    trial = TrialRun(factory(seed), config, seed=seed, device=CPU)
    return list(trial.epochs(epochs))


def test_every_epoch_reports_train_loss_val_loss_and_val_accuracy() -> None:
    reports = run(SGD, epochs=3)

    assert [r.epoch for r in reports] == [1, 2, 3]
    for report in reports:
        assert set(report.metrics) == {"train_loss", "val_loss", "val_accuracy"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in report.metrics.values())
        assert 0.0 <= report.metrics["val_accuracy"] <= 1.0
        assert report.diverged is False
        assert report.seconds > 0
    # Logistic regression with a sane step size learns.
    assert reports[-1].metrics["val_loss"] < reports[0].metrics["val_loss"]
    assert reports[-1].metrics["val_accuracy"] > 0.5


def test_same_seed_twice_gives_identical_metrics_other_seed_other() -> None:
    config = {**SGD, "batch_size": 32}

    first = [r.metrics for r in run(config, seed=3)]
    again = [r.metrics for r in run(config, seed=3)]
    other = [r.metrics for r in run(config, seed=4)]

    assert first == again
    assert first != other


def test_a_run_continues_where_it_stopped() -> None:
    # The actor trains a trial chunk by chunk: 2 + 1 epochs equal 3 epochs in one go.
    seed_everything(0)
    trial = TrialRun(logreg(0), SGD, seed=0, device=CPU)
    chunks = [r.metrics for r in trial.epochs(2)] + [r.metrics for r in trial.epochs(1)]

    assert chunks == [r.metrics for r in run(SGD, epochs=3)]
    assert trial.epoch == 3


def test_a_huge_learning_rate_diverges_and_stops_at_once() -> None:
    config = {"class": "torch.optim.SGD", "kwargs": {"lr": 1.0e6}, "batch_size": 8,
              "scheduler": None}
    seed_everything(0)
    trial = TrialRun(rosenbrock(0), config, seed=0, device=CPU)

    reports = list(trial.epochs(5))

    assert len(reports) == 1  # no further epochs after the divergence
    (report,) = reports
    assert report.diverged is True
    assert report.epoch == 1 and trial.epoch == 1
    assert not math.isfinite(report.metrics["train_loss"])


def test_a_landscape_reports_its_position_and_distance() -> None:
    config = {"class": "torch.optim.SGD", "kwargs": {"lr": 1.0e-4}, "batch_size": 64,
              "scheduler": None}

    reports = run(config, epochs=2, factory=rosenbrock)

    assert set(reports[0].metrics) == {"train_loss", "val_loss", "val_distance"}
    assert len(reports[0].extra["position"]) == 2
    x, y = reports[-1].extra["position"]
    assert reports[-1].metrics["val_distance"] == pytest.approx(math.hypot(x - 1, y - 1))


def test_the_schedule_steps_the_learning_rate_once_per_epoch() -> None:
    config = {**SGD, "scheduler": {"class": "torch.optim.lr_scheduler.ExponentialLR",
                                   "kwargs": {"gamma": 0.5}}}
    seed_everything(0)
    trial = TrialRun(logreg(0), config, seed=0, device=CPU)

    rates = []
    for _ in trial.epochs(3):
        rates.append(trial.optimizer.param_groups[0]["lr"])

    assert rates == pytest.approx([0.05, 0.025, 0.0125])
    assert isinstance(trial.scheduler, torch.optim.lr_scheduler.ExponentialLR)


def test_build_optimizer_turns_betas_into_a_tuple_and_builds_the_schedule() -> None:
    module = torch.nn.Linear(2, 1)
    config = {"class": "torch.optim.Adam",
              "kwargs": {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1.0e-6},
              "scheduler": {"class": "torch.optim.lr_scheduler.ExponentialLR",
                            "kwargs": {"gamma": 0.9}}}

    optimizer, scheduler = build_optimizer(config, module.parameters())

    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["betas"] == (0.8, 0.99)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR)
    module(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.009)


@pytest.mark.parametrize("dotted", ["os.system", "torch.nn.Linear", "builtins.eval"])
def test_build_optimizer_refuses_anything_outside_torch_optim(dotted: str) -> None:
    with pytest.raises(ValueError) as info:
        build_optimizer({"class": dotted, "kwargs": {}}, torch.nn.Linear(2, 1).parameters())

    assert str(info.value) == f"not a torch.optim class: {dotted!r}"


class _Pairs(Dataset):
    """Not a TensorDataset: the trainer falls back to a DataLoader."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.targets[i]


def test_a_plain_dataset_trains_like_a_tensor_dataset() -> None:
    base = logreg(0)
    X, y = tensor_dataset(base.train).tensors
    X_val, y_val = tensor_dataset(base.val).tensors
    task = Task(model=base.model, train=_Pairs(X, y), val=_Pairs(X_val, y_val),
                loss=base.loss, metrics=base.metrics)

    seed_everything(0)
    reports = list(TrialRun(task, SGD, seed=0, device=CPU).epochs(2))

    assert [set(r.metrics) for r in reports] == [{"train_loss", "val_loss", "val_accuracy"}] * 2
    assert reports[1].metrics["val_loss"] < reports[0].metrics["val_loss"]


# -- the trainer's options (a job's `trainer:` section) ----------------------------------------


def test_validation_in_batches_gives_the_whole_set_numbers() -> None:
    # Each metric is the batch-size-weighted mean: exact for the loss and accuracy.
    whole = run(SGD, epochs=2)
    seed_everything(0)
    batched = list(TrialRun(logreg(0), SGD, seed=0, device=CPU, val_batch_size=50).epochs(2))

    for a, b in zip(whole, batched, strict=True):
        assert a.metrics.keys() == b.metrics.keys()
        for key in a.metrics:
            assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-5), key


def test_a_plain_dataset_trains_with_dataloader_workers_like_in_process() -> None:
    base = logreg(0)
    X, y = tensor_dataset(base.train).tensors
    X_val, y_val = tensor_dataset(base.val).tensors

    def pairs_task() -> Task:
        seed_everything(0)
        fresh = logreg(0)
        return Task(model=fresh.model, train=_Pairs(X, y), val=_Pairs(X_val, y_val),
                    loss=fresh.loss, metrics=fresh.metrics)

    in_process = [r.metrics for r in TrialRun(pairs_task(), SGD, seed=0, device=CPU).epochs(2)]
    workers = TrialRun(pairs_task(), SGD, seed=0, device=CPU, num_workers=2, pin_memory=False,
                       val_batch_size=100)

    got = [r.metrics for r in workers.epochs(2)]
    assert [m.keys() for m in got] == [m.keys() for m in in_process]
    for a, b in zip(in_process, got, strict=True):
        assert b == pytest.approx(a, rel=1e-5)  # same order (the seed), same steps


def test_bf16_autocast_on_cpu_trains_close_to_full_precision() -> None:
    full = run(SGD, epochs=2)
    seed_everything(0)
    trial = TrialRun(logreg(0), SGD, seed=0, device=CPU, amp="bf16")
    seen: list[torch.dtype] = []
    trial.model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))

    bf16 = list(trial.epochs(2))

    assert torch.bfloat16 in seen  # the forward really ran in bfloat16
    assert all(p.dtype == torch.float32 for p in trial.model.parameters())  # master weights
    for a, b in zip(full, bf16, strict=True):
        assert b.metrics["val_loss"] == pytest.approx(a.metrics["val_loss"], rel=0.05)
        assert all(isinstance(v, float) and math.isfinite(v) for v in b.metrics.values())


def test_fp16_is_refused_on_cpu() -> None:
    with pytest.raises(ValueError) as info:
        TrialRun(logreg(0), SGD, seed=0, device=CPU, amp="fp16")

    assert str(info.value) == (
        "trainer.amp: fp16 needs a CUDA device, this trial trains on cpu; use bf16 on CPU"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs a CUDA GPU")
def test_fp16_with_a_grad_scaler_on_cuda() -> None:
    seed_everything(0)
    trial = TrialRun(logreg(0), SGD, seed=0, device=torch.device("cuda"), amp="fp16",
                     grad_clip=1.0)

    reports = list(trial.epochs(2))

    assert trial.scaler.is_enabled()
    assert reports[-1].metrics["val_loss"] < reports[0].metrics["val_loss"]


def test_gradient_clipping_bounds_the_step() -> None:
    # One full-batch SGD step with lr 1: the parameters move by exactly the clipped gradient.
    config = {"class": "torch.optim.SGD", "kwargs": {"lr": 1.0}, "batch_size": 100_000,
              "scheduler": None}
    seed_everything(0)
    trial = TrialRun(logreg(0), config, seed=0, device=CPU, grad_clip=0.01)
    before = torch.cat([p.detach().flatten().clone() for p in trial.model.parameters()])

    next(iter(trial.epochs(1)))

    after = torch.cat([p.detach().flatten() for p in trial.model.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.01, rel=1e-4)


def test_warmup_cosine_steps_per_batch_and_ends_near_zero() -> None:
    from search_spaces import schedule_config

    batches = math.ceil(1437 / 64)  # the digits' training set
    config = {**SGD, "scheduler": schedule_config("warmup_cosine", warmup=0.1, epochs=3,
                                                  steps_per_epoch=batches)}
    seed_everything(0)
    trial = TrialRun(logreg(0), config, seed=0, device=CPU)
    rates = [trial.optimizer.param_groups[0]["lr"]]
    for _ in trial.epochs(3):
        rates.append(trial.optimizer.param_groups[0]["lr"])

    assert trial.step_per_batch is True
    warm = round(0.1 * 3 * batches)
    assert rates[0] == pytest.approx(0.1 / (warm + 1))  # warm-up starts low
    assert rates[1] > rates[2] > rates[3]  # cosine decay after the warm-up (epoch ends)
    assert rates[3] == pytest.approx(0.0, abs=1e-12)  # reaches zero after the last batch
