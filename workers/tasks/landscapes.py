"""Two-parameter test functions: the optimizer moves a point ``w = (x, y)`` on a landscape.

The model holds only ``w``; its forward pass ignores the input's values and returns ``f(w)``
once per row, so the loss (the mean) is ``f(w)`` itself. The training set is 64 dummy rows:
the gradient is the same on every batch, so an epoch is ``ceil(64 / batch_size)`` full-gradient
steps and the batch size only sets how many steps an epoch takes. The validation set is one
dummy row. The metric ``distance`` is the Euclidean distance from ``w`` to the global minimum.

Each seed starts from the classic start point plus a uniform perturbation of at most 0.05 per
coordinate, so seeds differ but all start in the same region. ``model.position`` gives the
current point, for drawing the path over :func:`rosenbrock_value` / :func:`rastrigin_value`.

Example::

    task = rosenbrock(seed=0)
    task.model.position                      # about (-1.2, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tuner.task import Task

__all__ = [
    "RASTRIGIN_MINIMUM",
    "RASTRIGIN_START",
    "ROSENBROCK_MINIMUM",
    "ROSENBROCK_START",
    "Landscape",
    "rastrigin",
    "rastrigin_value",
    "rosenbrock",
    "rosenbrock_value",
]

# Rosenbrock (1960), "An automatic method for finding the greatest or least value of a
# function", The Computer Journal 3(3): the valley and its classic start (-1.2, 1).
ROSENBROCK_MINIMUM = (1.0, 1.0)
ROSENBROCK_START = (-1.2, 1.0)
# Rastrigin (1974); the 2-D form on [-5.12, 5.12]^2 with A = 10.
RASTRIGIN_MINIMUM = (0.0, 0.0)
RASTRIGIN_START = (2.5, -2.2)
PERTURBATION = 0.05
N_TRAIN = 64

Array = np.ndarray | float


def rosenbrock_value(x: Array, y: Array) -> Array:
    """``(1 - x)^2 + 100 (y - x^2)^2`` elementwise (numpy arrays or floats, for contour plots)."""
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def rastrigin_value(x: Array, y: Array) -> Array:
    """``20 + x^2 - 10 cos(2 pi x) + y^2 - 10 cos(2 pi y)`` elementwise (numpy or floats)."""
    return 20.0 + x**2 - 10.0 * np.cos(2 * np.pi * x) + y**2 - 10.0 * np.cos(2 * np.pi * y)


def _rosenbrock(w: torch.Tensor) -> torch.Tensor:
    return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


def _rastrigin(w: torch.Tensor) -> torch.Tensor:
    return 20.0 + (w**2 - 10.0 * torch.cos(2 * math.pi * w)).sum()


class Landscape(nn.Module):
    """One point ``w`` of shape (2,) on a function ``f``; ``forward(x)`` is ``f(w)`` per row."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor):
        super().__init__()
        self.f = f
        self.w = nn.Parameter(start.clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, ...)`` -> ``f(w)`` repeated, shape ``(batch,)``; x's values are ignored."""
        return self.f(self.w).expand(x.shape[0])

    @property
    def position(self) -> tuple[float, float]:
        """The current point ``(x, y)`` as floats."""
        x, y = self.w.detach().cpu().tolist()
        return (x, y)


class DistanceToMinimum:
    """The metric ``distance``: how far the model's ``w`` is from ``minimum`` (Euclidean).

    Metrics get ``(outputs, targets)``, which do not carry ``w``, so this holds the model.
    """

    def __init__(self, model: Landscape, minimum: tuple[float, float]):
        self.model = model
        self.minimum = minimum

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        x, y = self.model.position
        return math.hypot(x - self.minimum[0], y - self.minimum[1])


def _mean(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # A named function, not a lambda, so a Task pickles.
    return outputs.mean()


def _landscape(
    seed: int,
    f: Callable[[torch.Tensor], torch.Tensor],
    *,
    start: tuple[float, float],
    minimum: tuple[float, float],
) -> Task:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    offset = (torch.rand(2, generator=generator) * 2 - 1) * PERTURBATION
    model = Landscape(f, torch.tensor(start) + offset)
    return Task(
        model=model,
        train=TensorDataset(torch.zeros(N_TRAIN, 1), torch.zeros(N_TRAIN)),
        val=TensorDataset(torch.zeros(1, 1), torch.zeros(1)),
        loss=_mean,
        metrics={"distance": DistanceToMinimum(model, minimum)},
    )


def rosenbrock(seed: int) -> Task:
    """The Rosenbrock valley from about (-1.2, 1); minimum 0 at (1, 1). Reports ``distance``.

    The batch size only sets the number of (identical, full-gradient) steps per epoch.
    """
    return _landscape(seed, _rosenbrock, start=ROSENBROCK_START, minimum=ROSENBROCK_MINIMUM)


def rastrigin(seed: int) -> Task:
    """Rastrigin from about (2.5, -2.2), among many local minima; global minimum 0 at (0, 0).

    Reports ``distance``. The batch size only sets the number of steps per epoch.
    """
    return _landscape(seed, _rastrigin, start=RASTRIGIN_START, minimum=RASTRIGIN_MINIMUM)
