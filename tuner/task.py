"""What is trained: the :class:`Task` contract and the registry of task names.

A task knows nothing of optimizers; a search space knows nothing of models (the split of
MLCommons AlgoPerf between a *workload* and a *submission*).

A task is built by a factory ``build(seed) -> Task``. Built-in factories are listed in
:data:`BUILTIN_TASKS`; installed packages add theirs through the ``tuner.tasks`` entry-point
group; local runs may also name any ``package.module:factory``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from tuner.errors import TaskError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

__all__ = [
    "BUILTIN_TASKS",
    "Task",
    "TaskFactory",
    "TaskInfo",
    "available_tasks",
    "is_module_path",
    "reported_metrics",
    "resolve_task",
]

Metric = Callable[["torch.Tensor", "torch.Tensor"], float]


@dataclass
class Task:
    """One training problem: a model, its data, its loss and its validation metrics.

    Example::

        from tuner import Task

        def build(seed: int) -> Task:
            torch.manual_seed(seed)
            return Task(
                model=torch.nn.Sequential(torch.nn.Linear(64, 10)),
                train=TensorDataset(X_train, y_train),
                val=TensorDataset(X_val, y_val),
                loss=torch.nn.CrossEntropyLoss(),
                metrics={"accuracy": accuracy},
            )

    Attributes:
        model: Any ``torch.nn.Module``; the trainer moves it to the trial's device.
        train: The training set; a ``TensorDataset`` is batched without a DataLoader.
        val: The validation set, evaluated whole once per epoch.
        loss: ``(outputs, targets) -> scalar tensor``.
        metrics: Extra validation metrics ``(outputs, targets) -> float``, reported as
            ``val_<name>`` every epoch next to ``train_loss`` and ``val_loss``.
    """

    model: torch.nn.Module
    train: Dataset[Any]
    val: Dataset[Any]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: Mapping[str, Metric] = field(default_factory=dict)


TaskFactory = Callable[[int], Task]


@dataclass(frozen=True)
class TaskInfo:
    """What ``tuner tasks`` shows of a task."""

    name: str
    target: str
    kind: str
    description: str
    metrics: tuple[str, ...]


# name -> (module:factory, kind, description, validation metrics reported besides val_loss).
BUILTIN_TASKS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "digits-logreg": (
        "workers.tasks.digits:logreg",
        "convex",
        "multinomial logistic regression on the 8x8 digits (scikit-learn)",
        ("accuracy",),
    ),
    "digits-mlp": (
        "workers.tasks.digits:mlp",
        "image",
        "two-layer MLP on the 8x8 digits (scikit-learn)",
        ("accuracy",),
    ),
    "digits-cnn": (
        "workers.tasks.digits:cnn",
        "image",
        "small CNN on the 8x8 digits (scikit-learn)",
        ("accuracy",),
    ),
    "digits-autoencoder": (
        "workers.tasks.digits:autoencoder",
        "generative",
        "dense autoencoder reconstructing the 8x8 digits",
        ("mse",),
    ),
    "sequence-gru": (
        "workers.tasks.sequence:gru",
        "sequence",
        "GRU classifying generated sequences (is the running sum above zero at the end?)",
        ("accuracy",),
    ),
    "rosenbrock": (
        "workers.tasks.landscapes:rosenbrock",
        "non-convex",
        "the 2-D Rosenbrock valley, minimum 0 at (1, 1)",
        ("distance",),
    ),
    "quadratic-deep": (
        "workers.tasks.quadratic:quadratic_deep",
        "convex",
        "DeepOBS's noisy 100-D quadratic (eigenvalues 90 x U(0,1), 10 x U(30,60)); "
        "GD diverges above lr = 2/lambda_max ~ 0.034",
        ("distance",),
    ),
    "rastrigin": (
        "workers.tasks.landscapes:rastrigin",
        "non-convex",
        "the 2-D Rastrigin function, many local minima, global minimum 0 at (0, 0)",
        ("distance",),
    ),
}

_MODULE_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


def reported_metrics(metrics: Iterable[str]) -> list[str]:
    """What the trainer reports for a task with these validation ``metrics``."""
    return ["val_loss", "train_loss", *(f"val_{m}" for m in metrics)]


def is_module_path(name: str) -> bool:
    """True when ``name`` reads ``package.module:factory`` rather than a task name."""
    return bool(_MODULE_PATH.match(name))


def _installed() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="tuner.tasks")}


def available_tasks() -> list[TaskInfo]:
    """Built-in and installed (``tuner.tasks`` entry points) tasks, sorted by name."""
    infos = [
        TaskInfo(name, target, kind, description, metrics)
        for name, (target, kind, description, metrics) in BUILTIN_TASKS.items()
    ]
    for name, target in _installed().items():
        if name not in BUILTIN_TASKS:
            infos.append(TaskInfo(name, target, "installed", f"entry point {target}", ()))
    return sorted(infos, key=lambda info: info.name)


def task_names() -> list[str]:
    return [info.name for info in available_tasks()]


def task_target(name: str, *, allow_module_path: bool = True) -> str:
    """The ``module:factory`` a task name stands for, without importing anything.

    Raises:
        TaskError: ``name`` is neither a known task nor (where allowed) a module path.
    """
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name][0]
    installed = _installed()
    if name in installed:
        return installed[name]
    if allow_module_path and is_module_path(name):
        return name
    allowed = ", ".join(task_names())
    hint = " or package.module:factory" if allow_module_path else ""
    raise TaskError(f"unknown task {name!r}; available: {allowed}{hint} (see tuner tasks)")


def resolve_task(name: str, *, allow_module_path: bool = True) -> TaskFactory:
    """Import and return the factory of a task.

    Raises:
        TaskError: unknown name, a module that does not import, or no such factory.
    """
    target = task_target(name, allow_module_path=allow_module_path)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskError(f"task {name!r}: cannot import module {module_name!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskError(f"task {name!r}: module {module_name!r} has no callable {attr!r}")
    return factory
