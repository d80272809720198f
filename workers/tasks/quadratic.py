"""DeepOBS's ``quadratic_deep``: a noisy 100-dimensional quadratic with a known stability edge.

Schneider, Balles & Hennig (2019), DeepOBS, test problem ``quadratic_deep``: the loss of a
parameter vector ``θ`` (started at 1) on a data point ``x ~ N(0, I)`` is

    ½ (θ − x)ᵀ Q (θ − x),   Q = R diag(λ) Rᵀ,

with 90 eigenvalues λ drawn from U(0, 1), 10 from U(30, 60), and R a random rotation: a
"deep-learning-like" spectrum, a few sharp directions and many flat ones. The minimum of the
expected loss is at θ = 0. Plain (full-batch) gradient descent on it is stable exactly when
``lr < 2 / λ_max``, so the task has a known edge where training blows up: what divergence
handling and a learning-rate range test are checked against (:func:`stability_edge`).

The problem (spectrum, rotation) and the data (1,000 training and 500 validation points) come
from a fixed generator, the same for every trial and optimizer, and are built once per
process; the seed moves the start point (DeepOBS's θ = 1, plus N(0, 0.1²) per coordinate) and
the batch order. The metric ``distance`` is ‖θ‖, the distance to the minimum.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.utils.data import TensorDataset

from tuner.task import Task

__all__ = ["DIM", "QuadraticDeep", "hessian", "quadratic_deep", "stability_edge"]

DIM = 100
N_TRAIN, N_VAL = 1000, 500
START_NOISE = 0.1
_PROBLEM_SEED = 42  # DeepOBS fixes the problem


@lru_cache(maxsize=1)
def hessian() -> torch.Tensor:
    """``Q``: 90 eigenvalues in U(0, 1), 10 in U(30, 60), rotated by a random orthogonal R."""
    generator = torch.Generator().manual_seed(_PROBLEM_SEED)
    eigenvalues = torch.cat([torch.rand(90, generator=generator),
                             30.0 + 30.0 * torch.rand(10, generator=generator)])
    rotation: torch.Tensor  # torch.linalg.qr is typed Any
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator))
    return rotation @ torch.diag(eigenvalues) @ rotation.T


def stability_edge() -> float:
    """``2 / λ_max``: gradient descent with a larger rate diverges on this quadratic."""
    return float(2.0 / torch.linalg.eigvalsh(hessian()).max())


class QuadraticDeep(nn.Module):
    """``θ`` of shape (100,); ``forward(x)`` is the per-example loss ½ (θ − x)ᵀ Q (θ − x)."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(start.clone())
        self.q: torch.Tensor
        self.register_buffer("q", hessian())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.theta - x
        return 0.5 * ((d @ self.q) * d).sum(dim=1)


def _mean(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # A named function, not a lambda, so a Task pickles.
    return outputs.mean()


class DistanceToMinimum:
    """The metric ``distance``: ‖θ‖, how far the model is from the minimum θ = 0.

    Metrics get ``(outputs, targets)``, which do not carry θ, so this holds the model.
    """

    def __init__(self, model: QuadraticDeep) -> None:
        self.model = model

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(self.model.theta.detach()))


@lru_cache(maxsize=1)
def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(_PROBLEM_SEED + 1)
    return (torch.randn(N_TRAIN, DIM, generator=generator),
            torch.randn(N_VAL, DIM, generator=generator))


def quadratic_deep(seed: int) -> Task:
    """The task: ``val_loss`` is the mean loss on 500 held-out points (lower is better)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = 1.0 + START_NOISE * torch.randn(DIM, generator=generator)
    model = QuadraticDeep(start)
    x_train, x_val = _data()
    # The targets are unused (the loss is the model's output); zeros keep the shapes simple.
    return Task(
        model=model,
        train=TensorDataset(x_train, torch.zeros(N_TRAIN)),
        val=TensorDataset(x_val, torch.zeros(N_VAL)),
        loss=_mean,
        metrics={"distance": DistanceToMinimum(model)},
    )

