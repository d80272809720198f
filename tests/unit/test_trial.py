"""The training-loop contract without Ray: ``tuner.Trial`` on its own, and the worker's
hand-over of a loop's epochs (workers.actor, the plain class behind the Ray actor)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import tuner
from tuner.task import is_training_loop, resolve_task
from tuner.trial import TrialDiverged
from workers.actor import _Worker

SGD = {"class": "torch.optim.SGD", "kwargs": {"lr": 0.1}, "batch_size": 8, "scheduler": None,
       "hyperparameters": {"lr": 0.1, "batch_size": 8}}


def test_the_decorator_marks_and_returns_the_function() -> None:
    def train(trial: tuner.Trial) -> None: ...

    assert tuner.training_loop(train) is train
    assert is_training_loop(train) and is_training_loop(resolve_task("cartpole-reinforce"))
    assert not is_training_loop(resolve_task("digits-mlp"))
    with pytest.raises(TypeError):
        tuner.training_loop(3)  # type: ignore[arg-type]


def test_a_trial_on_its_own_records_its_reports() -> None:
    trial = tuner.Trial(SGD, seed=5, epochs=2, hyperparameters={"lr": 0.1})
    optimizer, scheduler = trial.build_optimizer(torch.nn.Linear(2, 1).parameters())

    trial.report(1, val_loss=torch.tensor(0.5), val_accuracy=0.25)
    trial.report(2, val_loss=0.4)

    assert isinstance(optimizer, torch.optim.SGD) and scheduler is None
    assert (trial.seed, trial.epochs, trial.batch_size, str(trial.device)) == (5, 2, 8, "cpu")
    assert [(r["epoch"], r["metrics"]) for r in trial.reports] == [
        (1, {"val_loss": 0.5, "val_accuracy": 0.25}), (2, {"val_loss": pytest.approx(0.4)})]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.report(1), "trial.report: give at least one metric, e.g. val_loss=0.25"),
        (lambda t: t.report(0, val_loss=1.0),
         "trial.report: epoch must be an integer above the last one (0), counting from 1, but "
         "got 0"),
        (lambda t: t.report(1.5, val_loss=1.0),
         "trial.report: epoch must be an integer above the last one (0), counting from 1, but "
         "got 1.5"),
        (lambda t: t.report(1, val_loss="low"),
         "trial.report: val_loss must be a number, but got 'low'"),
    ],
)
def test_bad_reports_are_named(call: Callable[[tuner.Trial], object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        call(tuner.Trial(SGD))
    assert str(info.value) == message


def test_a_report_must_follow_the_last_epoch() -> None:
    trial = tuner.Trial(SGD)
    trial.report(1, val_loss=1.0)

    with pytest.raises(ValueError, match=r"above the last one \(1\), counting from 1, but got 1"):
        trial.report(1, val_loss=1.0)


def test_a_non_finite_loss_or_metric_diverges() -> None:
    for metrics in ({"train_loss": math.nan}, {"d_loss": math.inf, "val_w1": 1.0},
                    {"val_w1": math.nan}):
        trial = tuner.Trial(SGD, metric="val_w1")
        with pytest.raises(TrialDiverged):
            trial.report(1, **({"val_w1": 1.0} | metrics))
        assert trial.reports[-1]["diverged"] is True
    # A non-finite value of another metric is only a value.
    tuner.Trial(SGD, metric="val_w1").report(1, val_w1=1.0, grad_norm=math.inf)
    assert issubclass(TrialDiverged, tuner.TrialPruned)


def test_the_first_report_must_carry_the_jobs_metric() -> None:
    trial = tuner.Trial(SGD, metric="val_accuracy", name="mymodel:train")

    with pytest.raises(tuner.TaskError) as info:
        trial.report(1, val_loss=1.0, train_loss=2.0)

    assert str(info.value) == ("metric: training loop 'mymodel:train' does not report "
                               "'val_accuracy'; it reports val_loss, train_loss")


def test_warmup_cosine_steps_per_batch_when_the_loop_says_how_many() -> None:
    from search_spaces import schedule_config

    config = {**SGD, "scheduler": schedule_config("warmup_cosine", warmup=0.25, epochs=4)}
    trial = tuner.Trial(config, epochs=4, hyperparameters={"schedule": "warmup_cosine",
                                                           "warmup": 0.25})
    params = list(torch.nn.Linear(2, 1).parameters())

    _, per_epoch = trial.build_optimizer(params)
    _, per_batch = trial.build_optimizer(params, steps_per_epoch=10)

    assert isinstance(per_epoch, torch.optim.lr_scheduler.SequentialLR)
    assert per_epoch._milestones == [1]  # 25% of 4 epochs
    assert per_batch._milestones == [10]  # type: ignore[union-attr]  # 25% of 40 steps


# -- the worker's side: a loop in a thread, epochs handed over chunk by chunk ---------------


def worker() -> _Worker:
    return _Worker("tests.integration.loops:probe")


def test_a_loop_worker_says_it_knows_no_data_or_metrics_in_advance() -> None:
    info = worker().describe()

    assert (info.metrics, info.train_size, info.val_size, info.data_sha256) == (
        None, None, None, None)


def test_a_loop_hands_over_its_epochs_chunk_by_chunk() -> None:
    w = worker()

    first = w.start("sgd/trial/0", SGD, seed=0, epochs=1, budget=4)
    second = w.advance("sgd/trial/0", epochs=2)
    last = w.advance("sgd/trial/0", epochs=5)

    assert [e["epoch"] for e in first.epochs] == [1] and not first.finished
    assert [e["epoch"] for e in second.epochs] == [2, 3] and second.epochs_done == 3
    assert [e["epoch"] for e in last.epochs] == [4] and last.finished and not last.diverged
    assert all(set(e) == {"epoch", "metrics", "seconds"} for e in first.epochs + last.epochs)


def test_the_next_start_prunes_the_blocked_loop() -> None:
    from tests.integration import loops

    loops.EVENTS.unlink(missing_ok=True)
    w = worker()
    # The chunk wanted one epoch: the loop waits inside its first report for the next one.
    w.start("sgd/trial/0", SGD, seed=0, epochs=1, budget=4)

    step = w.start("sgd/trial/1", SGD, seed=1, epochs=4, budget=4)

    assert step.finished
    assert [(e["seed"], e["event"], e["epochs"]) for e in loops.events()] == [
        (0, "TrialPruned", 1), (1, "returned", 4)]


def test_stop_ends_a_held_loop_and_ignores_other_keys() -> None:
    from tests.integration import loops

    loops.EVENTS.unlink(missing_ok=True)
    w = worker()
    w.start("sgd/trial/0", SGD, seed=0, epochs=1, budget=4)

    w.stop("sgd/trial/9")  # not held: nothing happens
    assert loops.events() == []
    w.stop("sgd/trial/0")

    assert [e["event"] for e in loops.events()] == ["TrialPruned"]
    with pytest.raises(RuntimeError):
        w.advance("sgd/trial/0", epochs=1)


def test_divergence_and_errors_end_the_trial() -> None:
    w = worker()

    diverged = w.start("sgd/trial/2", SGD, seed=2, epochs=4, budget=4)
    failed = w.start("sgd/trial/3", SGD, seed=3, epochs=4, budget=4)

    assert diverged.diverged and diverged.finished and diverged.error is None
    assert not math.isfinite(diverged.epochs[-1]["metrics"]["val_loss"])
    assert failed.finished and not failed.diverged
    assert failed.error == "ValueError: lr 0.1 is too high for this model"
    assert [e["epoch"] for e in failed.epochs] == [1]


def test_a_loop_without_the_jobs_metric_raises_a_task_error() -> None:
    w = worker()

    with pytest.raises(tuner.TaskError) as info:
        w.start("sgd/trial/0", SGD, seed=0, epochs=1, budget=2, metric="val_accuracy")

    assert str(info.value) == ("metric: training loop 'tests.integration.loops:probe' does "
                               "not report 'val_accuracy'; it reports val_loss")


def test_a_task_worker_takes_the_trainer_options() -> None:
    w = _Worker("digits-logreg", trainer={"val_batch_size": 100, "amp": "bf16"})

    step = w.start("sgd/trial/0", {**SGD, "batch_size": 64}, seed=0, epochs=1, budget=1)

    assert step.finished and set(step.epochs[0]["metrics"]) == {
        "train_loss", "val_loss", "val_accuracy"}
