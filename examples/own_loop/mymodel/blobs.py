"""Your own ``Task``: a model, two datasets and a loss; tuner's trainer does the rest.

Run it (from this folder)::

    tuner run blobs.yaml
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from tuner import Task


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return (outputs.argmax(1) == targets).float().mean().item()


def build(seed: int) -> Task:
    """Three Gaussian blobs in 2-D, classified by a small MLP."""
    data = torch.Generator().manual_seed(0)  # the same data for every trial
    centres = torch.tensor([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
    labels = torch.randint(0, 3, (1200,), generator=data)
    points = centres[labels] + 1.2 * torch.randn(1200, 2, generator=data)
    torch.manual_seed(seed)  # the seed sets the model's initial weights
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    return Task(
        model=model,
        train=TensorDataset(points[:1000], labels[:1000]),
        val=TensorDataset(points[1000:], labels[1000:]),
        loss=torch.nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy},
    )
