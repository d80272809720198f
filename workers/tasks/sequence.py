"""A generated sequence task: does the running sum end above zero?

Each sequence has 20 steps drawn uniformly from {-1, 0, +1}; the label is 1 when their sum is
greater than 0, else 0 (a sum of exactly 0 is class 0, so about 44% of labels are 1). The model
has to count over the whole sequence; the cases with a final sum near zero keep it from being
trivial. 2000 training and 500 validation sequences come from ``numpy.random.default_rng(0)``,
whatever the factory's seed, and are generated once per process.

Example::

    task = gru(seed=0)
    X_val, y_val = task.val.tensors          # (500, 20, 1) float32, (500,) int64
"""

from __future__ import annotations

from functools import lru_cache
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tuner.task import Task
from workers.tasks._metrics import accuracy

__all__ = ["SequenceClassifier", "gru"]

LENGTH = 20
N_TRAIN = 2000
N_VAL = 500
DATA_SEED = 0  # fixed: the data must not move with the trial's seed
HIDDEN = 32


@lru_cache(maxsize=1)
def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(DATA_SEED)
    steps = rng.integers(-1, 2, size=(N_TRAIN + N_VAL, LENGTH))
    X = torch.tensor(steps, dtype=torch.float32).unsqueeze(-1)  # (n, length, 1)
    y = torch.tensor(steps.sum(axis=1) > 0, dtype=torch.int64)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


class SequenceClassifier(nn.Module):
    """A one-layer GRU read out by a linear layer on its last hidden state."""

    def __init__(self, *, input_size: int = 1, hidden_size: int = HIDDEN, classes: int = 2):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, length, input_size)`` -> logits ``(batch, classes)``."""
        _, h_last = self.gru(x)  # h_last: (layers=1, batch, hidden)
        return cast(torch.Tensor, self.head(h_last[-1]))


def gru(seed: int) -> Task:
    """A GRU (hidden 32) classifying whether a {-1, 0, +1} sequence sums above zero."""
    torch.manual_seed(seed)
    X_train, y_train, X_val, y_val = _tensors()
    return Task(
        model=SequenceClassifier(),
        train=TensorDataset(X_train, y_train),
        val=TensorDataset(X_val, y_val),
        loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy},
    )
