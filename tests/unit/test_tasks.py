"""The built-in tasks (workers/tasks) and how their names resolve (tuner.task)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch

from tests.datasets import tensor_dataset
from tuner.errors import TaskError
from tuner.task import BUILTIN_TASKS, LOOP_TASKS, Task, resolve_task
from workers.tasks import digits, landscapes

NAMES = sorted(set(BUILTIN_TASKS) - LOOP_TASKS)  # the Task factories (loops: test_loop_tasks)


def build(name: str, seed: int = 0) -> Task:
    task = resolve_task(name)(seed)
    assert isinstance(task, Task), name  # NAMES are factories, not training loops
    return task


def fit(task: Task, optimizer: torch.optim.Optimizer, *, epochs: int, batch_size: int) -> None:
    """The plainest loop: shuffled minibatches of a TensorDataset."""
    X, y = tensor_dataset(task.train).tensors
    generator = torch.Generator().manual_seed(0)
    task.model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch_size):
            batch = order[start : start + batch_size]
            loss = task.loss(task.model(X[batch]), y[batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def evaluate(task: Task) -> tuple[float, dict[str, float]]:
    X_val, y_val = tensor_dataset(task.val).tensors
    task.model.eval()
    with torch.no_grad():
        outputs = task.model(X_val)
        return task.loss(outputs, y_val).item(), {
            name: metric(outputs, y_val) for name, metric in task.metrics.items()
        }


@pytest.mark.parametrize("name", NAMES)
def test_task_builds_and_its_loss_and_metrics_accept_the_model_outputs(name: str) -> None:
    task = build(name)

    assert isinstance(task, Task)
    assert isinstance(task.model, torch.nn.Module)
    assert len(tensor_dataset(task.train)) > 0 and len(tensor_dataset(task.val)) > 0
    loss, metrics = evaluate(task)
    assert math.isfinite(loss)
    assert set(metrics) == set(BUILTIN_TASKS[name][3])  # what `tuner tasks` promises
    for value in metrics.values():
        assert isinstance(value, float) and math.isfinite(value)


@pytest.mark.parametrize("name", NAMES)
def test_the_loss_of_a_training_batch_has_gradients(name: str) -> None:
    task = build(name)
    X, y = tensor_dataset(task.train).tensors

    task.loss(task.model(X[:8]), y[:8]).backward()

    grads = [p.grad for p in task.model.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_initial_parameters_other_seed_other(name: str) -> None:
    first = build(name, seed=0).model.state_dict()
    again = build(name, seed=0).model.state_dict()
    other = build(name, seed=1).model.state_dict()

    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", NAMES)
def test_data_is_the_same_whatever_the_seed(name: str) -> None:
    a, b = build(name, seed=0), build(name, seed=7)

    for dataset_a, dataset_b in [(a.train, b.train), (a.val, b.val)]:
        pairs = zip(tensor_dataset(dataset_a).tensors, tensor_dataset(dataset_b).tensors,
                    strict=True)
        for tensor_a, tensor_b in pairs:
            assert torch.equal(tensor_a, tensor_b)


@pytest.mark.parametrize("name", ["digits-logreg", "digits-autoencoder", "sequence-gru"])
def test_data_is_built_once_per_process(name: str) -> None:
    a, b = build(name, seed=0), build(name, seed=1)

    assert tensor_dataset(a.train).tensors[0] is tensor_dataset(b.train).tensors[0]
    assert tensor_dataset(a.val).tensors[0] is tensor_dataset(b.val).tensors[0]


@pytest.mark.parametrize("name", NAMES)
def test_a_task_pickles(name: str) -> None:
    task = pickle.loads(pickle.dumps(build(name)))

    loss, metrics = evaluate(task)
    assert math.isfinite(loss) and metrics


def test_digits_split_is_fixed_stratified_and_matches_the_tensors() -> None:
    X_train, y_train, X_val, y_val = digits.digits_split()
    task = digits.mlp(seed=3)

    assert X_train.shape == (1437, 64) and X_val.shape == (360, 64)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0
    # Stratified: every class keeps its share of the 1797 images within one image.
    assert np.abs(np.bincount(y_val) - np.bincount(y_train) / 4).max() <= 1
    assert not X_train.flags.writeable  # cached and shared
    assert digits.digits_split() is digits.digits_split()
    np.testing.assert_array_equal(tensor_dataset(task.train).tensors[0].numpy(), X_train)
    np.testing.assert_array_equal(tensor_dataset(task.val).tensors[1].numpy(), y_val)


def test_digits_split_is_scikit_learns_own() -> None:
    """The images and the split are exactly what scikit-learn's load_digits and
    train_test_split(test_size=0.2, stratify=y, random_state=0) give (read without it)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    expected = train_test_split((data.data / 16.0).astype(np.float32),
                                data.target.astype(np.int64),
                                test_size=digits.VAL_FRACTION, stratify=data.target,
                                random_state=digits.SPLIT_RANDOM_STATE)
    X_train, y_train, X_val, y_val = digits.digits_split()
    for ours, theirs in zip((X_train, X_val, y_train, y_val), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
        assert ours.dtype == theirs.dtype


def test_autoencoder_reconstructs_its_inputs() -> None:
    task = digits.autoencoder(seed=0)
    X_val, targets = tensor_dataset(task.val).tensors

    assert targets is X_val
    assert task.model(X_val).shape == X_val.shape


def test_digits_logreg_trains_above_90_percent() -> None:
    torch.manual_seed(0)
    task = digits.logreg(seed=0)

    fit(task, torch.optim.Adam(task.model.parameters(), lr=1e-2), epochs=30, batch_size=64)

    _, metrics = evaluate(task)
    assert metrics["accuracy"] > 0.9


def test_sequence_labels_say_whether_the_sum_is_above_zero() -> None:
    task = build("sequence-gru")
    X_val, y_val = tensor_dataset(task.val).tensors

    assert X_val.shape == (500, 20, 1) and len(tensor_dataset(task.train)) == 2000
    assert set(X_val.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(y_val, (X_val.sum(dim=(1, 2)) > 0).long())
    assert 0.3 < y_val.float().mean().item() < 0.7


def test_rosenbrock_sgd_reduces_the_loss_and_the_distance() -> None:
    task = landscapes.rosenbrock(seed=0)
    loss_before, metrics_before = evaluate(task)

    fit(task, torch.optim.SGD(task.model.parameters(), lr=1e-3), epochs=20, batch_size=8)

    loss_after, metrics_after = evaluate(task)
    assert loss_after < loss_before
    assert metrics_after["distance"] < metrics_before["distance"]


@pytest.mark.parametrize(
    ("factory", "start", "minimum", "value"),
    [
        (
            landscapes.rosenbrock,
            landscapes.ROSENBROCK_START,
            landscapes.ROSENBROCK_MINIMUM,
            landscapes.rosenbrock_value,
        ),
        (
            landscapes.rastrigin,
            landscapes.RASTRIGIN_START,
            landscapes.RASTRIGIN_MINIMUM,
            landscapes.rastrigin_value,
        ),
    ],
)
def test_landscape_position_value_and_distance_agree(
    factory: Callable[..., Task], start: tuple[float, float], minimum: tuple[float, float],
    value: Callable[[landscapes.Array, landscapes.Array], landscapes.Array],
) -> None:
    task = factory(seed=5)
    assert isinstance(task.model, landscapes.Landscape)
    x, y = task.model.position

    assert max(abs(x - start[0]), abs(y - start[1])) <= landscapes.PERTURBATION
    outputs = task.model(torch.zeros(3, 1))
    assert outputs.shape == (3,)
    assert outputs[0].item() == pytest.approx(value(x, y), rel=1e-5)
    distance = task.metrics["distance"](outputs, torch.zeros(3))
    assert distance == pytest.approx(math.hypot(x - minimum[0], y - minimum[1]))
    assert value(*minimum) == pytest.approx(0.0, abs=1e-12)
    grid = np.meshgrid(np.linspace(-2, 2, 5), np.linspace(-1, 3, 4))
    assert np.shape(value(*grid)) == (4, 5)


def test_unknown_task_name_lists_what_is_available() -> None:
    with pytest.raises(TaskError) as excinfo:
        resolve_task("nosuch")

    message = str(excinfo.value)
    assert message.startswith("unknown task 'nosuch'; available: cartpole-reinforce, ")
    assert message.endswith(", vowels-cnn or package.module:factory (see tuner tasks)")
    for name in BUILTIN_TASKS:
        assert name in message


def test_module_path_without_that_factory_is_a_task_error() -> None:
    with pytest.raises(TaskError, match="module 'os' has no callable 'nosuchfactory'"):
        resolve_task("os:nosuchfactory")


def test_module_path_that_does_not_import_is_a_task_error() -> None:
    with pytest.raises(TaskError, match="cannot import module 'nosuchpackage.tasks'"):
        resolve_task("nosuchpackage.tasks:build")
