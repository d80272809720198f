"""Four tasks on scikit-learn's 8x8 handwritten digits (1797 images, 10 classes, no download).

Every digits task shares one split: pixels scaled to [0, 1], a stratified 80/20 train/val split
with ``random_state=0``, whatever the factory's seed, so every trial of every optimizer sees the
same 1437 training and 360 validation images. The data is loaded once per process and cached;
the model is built fresh by each call, after ``torch.manual_seed(seed)``.

Example::

    task = mlp(seed=0)
    X_val, y_val = task.val.tensors
    task.metrics["accuracy"](task.model(X_val), y_val)
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tuner.task import Task
from workers.tasks._metrics import accuracy, mse

__all__ = ["autoencoder", "cnn", "digits_split", "logreg", "mlp"]

# The split digits_split.npz stores: train_test_split(..., test_size=VAL_FRACTION,
# stratify=y, random_state=SPLIT_RANDOM_STATE); fixed, it never moves with a trial's seed.
SPLIT_RANDOM_STATE = 0
VAL_FRACTION = 0.2


@lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shared split as read-only numpy arrays ``(X_train, y_train, X_val, y_val)``.

    ``X`` is float32 of shape ``(n, 64)`` in [0, 1]; ``y`` is int64 in 0..9. Use it to compare
    against scikit-learn estimators on exactly the data the tasks train on.

    The images are the ones scikit-learn ships (``load_digits`` reads the same file), read
    without importing scikit-learn, whose import costs a worker about 1.5 s; the split is
    scikit-learn's ``train_test_split(test_size=0.2, stratify=y, random_state=0)``, stored as
    its indices (``digits_split.npz``: the same on every scikit-learn version;
    tests/unit/test_tasks.py checks it against scikit-learn).
    """
    data = np.loadtxt(_sklearn_data("digits.csv.gz"), delimiter=",")
    X = (data[:, :-1] / 16.0).astype(np.float32)  # pixel values are 0..16
    y = data[:, -1].astype(np.int64)
    with np.load(Path(__file__).with_name("digits_split.npz")) as split:
        train, val = split["train"].astype(np.intp), split["val"].astype(np.intp)
    arrays = X[train], y[train], X[val], y[val]
    for array in arrays:
        array.setflags(write=False)  # cached and shared: nobody may change it in place
    return arrays


def _sklearn_data(name: str) -> Path:
    """A data file bundled with scikit-learn (found, not imported)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the digits tasks need scikit-learn (its bundled data)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name


@lru_cache(maxsize=1)
def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Copies: torch.from_numpy would warn on the read-only arrays. Built once per process; a
    # worker runs many trials and must not reload or re-split the data for each.
    return tuple(torch.tensor(a) for a in digits_split())  # type: ignore[return-value]


def _classifier(model: nn.Module) -> Task:
    X_train, y_train, X_val, y_val = _tensors()
    return Task(
        model=model,
        train=TensorDataset(X_train, y_train),
        val=TensorDataset(X_val, y_val),
        loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy},
    )


def logreg(seed: int) -> Task:
    """Multinomial logistic regression, one ``Linear(64, 10)``: a convex problem."""
    torch.manual_seed(seed)
    return _classifier(nn.Linear(64, 10))


def mlp(seed: int) -> Task:
    """A two-layer MLP, 64 -> 64 -> 10 with ReLU (4,810 parameters)."""
    torch.manual_seed(seed)
    return _classifier(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))


def cnn(seed: int) -> Task:
    """A small CNN on the 1x8x8 images: two 3x3 convolutions, one 2x2 max-pool, a linear head."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),  # the shared data is flat (n, 64)
        nn.Conv2d(1, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16 x 4 x 4
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    return _classifier(model)


def autoencoder(seed: int) -> Task:
    """A dense autoencoder 64 -> 32 -> 8 -> 32 -> 64 reconstructing the images (MSE).

    The targets are the inputs; the labels are not used. Reports ``mse`` (equal to the loss).
    """
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 8),
        nn.ReLU(),
        nn.Linear(8, 32),
        nn.ReLU(),
        nn.Linear(32, 64),
    )
    X_train, _, X_val, _ = _tensors()
    return Task(
        model=model,
        train=TensorDataset(X_train, X_train),
        val=TensorDataset(X_val, X_val),
        loss=nn.MSELoss(),
        metrics={"mse": mse},
    )
