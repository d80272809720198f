"""What is trained: the :class:`Task` contract and the registry of task names.

A task knows nothing of optimizers; a search space knows nothing of models (the split of
MLCommons AlgoPerf between a *workload* and a *submission*).

A task is built by a factory ``build(seed) -> Task``, or it is a user's own training loop
``train(trial)`` marked by :func:`training_loop` (the model does not fit the ``Task`` shape:
reinforcement learning, two optimizers, custom data pipelines). Built-in tasks are listed in
:data:`BUILTIN_TASKS`; installed packages add theirs through the ``tuner.tasks`` entry-point
group; local runs may also name any ``package.module:name``.
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
    "TrainingLoop",
    "available_tasks",
    "is_module_path",
    "is_training_loop",
    "reported_metrics",
    "resolve_task",
    "training_loop",
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
TrainingLoop = Callable[[Any], None]
"""A function ``train(trial: tuner.Trial) -> None`` marked by :func:`training_loop`."""

_LOOP_MARK = "__tuner_training_loop__"


def training_loop(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Mark ``fn(trial)`` as a training loop, so a job's ``task: package.module:fn`` runs it.

    tuner supplies the trial (its seed, device, epoch budget, hyperparameters, optimizer) and
    ``fn`` trains, calling ``trial.report(epoch, **metrics)`` once per epoch::

        import tuner

        @tuner.training_loop
        def train(trial: tuner.Trial) -> None:
            torch.manual_seed(trial.seed)
            model = Net().to(trial.device)
            optimizer, scheduler = trial.build_optimizer(model.parameters())
            for epoch in range(trial.epochs):
                ...                                   # your own steps
                trial.report(epoch + 1, val_loss=vl)  # raises tuner.TrialPruned

    The function is returned unchanged, with a marker attribute.
    """
    if not callable(fn):
        raise TypeError(f"@tuner.training_loop marks a function train(trial), got {fn!r}")
    setattr(fn, _LOOP_MARK, True)
    return fn


def is_training_loop(obj: Any) -> bool:
    """True for a function marked by :func:`training_loop`."""
    return callable(obj) and getattr(obj, _LOOP_MARK, False) is True


@dataclass(frozen=True)
class TaskInfo:
    """What ``tuner tasks`` shows of a task.

    ``metrics`` are a ``Task``'s validation metrics (reported as ``val_<name>`` next to
    ``train_loss`` and ``val_loss``); for a training loop (``loop``) they are every name it
    reports. :attr:`reports` is what a job's ``metric`` may name.
    """

    name: str
    target: str
    kind: str
    description: str
    metrics: tuple[str, ...]
    loop: bool = False

    @property
    def reports(self) -> list[str]:
        return list(self.metrics) if self.loop else reported_metrics(self.metrics)


# name -> (module:factory, kind, description, validation metrics reported besides val_loss;
# for the training loops of LOOP_TASKS: every metric they report).
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
    "cartpole-reinforce": (
        "workers.tasks.cartpole:reinforce",
        "reinforcement learning",
        "REINFORCE policy gradient on gymnasium's CartPole-v1 (a training loop; tuner[rl])",
        ("val_return", "train_return", "train_loss"),
    ),
    "text-transformer": (
        "workers.tasks.language:transformer",
        "language",
        "byte-level transformer language model on Python's own documentation text",
        ("perplexity",),
    ),
    "vowels-cnn": (
        "workers.tasks.speech:vowels",
        "speech",
        "ten synthesised vowels (Peterson & Barney formants), log-mel spectrogram CNN",
        ("accuracy",),
    ),
}

#: Built-in tasks that are training loops: their metrics are every name they report.
LOOP_TASKS = frozenset({"cartpole-reinforce"})

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
        TaskInfo(name, target, kind, description, metrics, loop=name in LOOP_TASKS)
        for name, (target, kind, description, metrics) in BUILTIN_TASKS.items()
    ]
    for name, target in _installed().items():
        if name not in BUILTIN_TASKS:
            infos.append(TaskInfo(name, target, "installed", f"entry point {target}", ()))
    return sorted(infos, key=lambda info: info.name)


def task_reports(name: str) -> list[str] | None:
    """What the built-in task ``name`` reports, or None when that is known only once it runs."""
    for info in available_tasks():
        if info.name == name and info.kind != "installed":
            return info.reports
    return None


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


def resolve_task(
    name: str, *, allow_module_path: bool = True
) -> TaskFactory | TrainingLoop:
    """Import and return a task's factory ``build(seed) -> Task``, or its training loop
    ``train(trial)`` (tell them apart with :func:`is_training_loop`).

    Raises:
        TaskError: unknown name, a module that does not import, or no such function.
    """
    target = task_target(name, allow_module_path=allow_module_path)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskError(f"task {name!r}: cannot import module {module_name!r}: {e}") from e
    factory: TaskFactory | TrainingLoop | None = getattr(module, attr, None)
    if not callable(factory):
        raise TaskError(f"task {name!r}: module {module_name!r} has no callable {attr!r}")
    return factory
