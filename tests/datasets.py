"""The built-in tasks' data sets, typed: ``Task.train`` and ``Task.val`` are any ``Dataset``;
the built-in tasks build ``TensorDataset``s, whose tensors the tests read."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset, TensorDataset

__all__ = ["tensor_dataset"]


def tensor_dataset(dataset: Dataset[Any]) -> TensorDataset:
    """``dataset``, which a built-in task builds as a ``TensorDataset``."""
    assert isinstance(dataset, TensorDataset), type(dataset)
    return dataset
