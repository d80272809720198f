"""A byte-level transformer language model on Python's own documentation text.

The text: CPython ships ``pydoc_data.topics`` (79 topics of the language reference, about
465,000 characters of English technical prose) in every install, so the task needs no
download. Its text differs slightly between Python versions: the task's data SHA-256 (stored
with every result, ``tuner report``'s problem line) tells which text a result was trained on.

The data: the topics joined in sorted order, UTF-8 bytes (a vocabulary of 256), cut into
non-overlapping windows of ``CONTEXT + 1`` bytes; ``N_TRAIN`` and ``N_VAL`` windows drawn
without overlap by ``numpy.random.default_rng(0)``, whatever the trial's seed. A window's
first ``CONTEXT`` bytes are the input, the same bytes shifted by one the targets.

The model: a GPT-style decoder (causal self-attention), 2 pre-norm layers of width 64 with 4
heads, learned positions, the output layer tied to the byte embedding (about 88,000
parameters). The loss is the mean cross-entropy per byte (nats); ``perplexity`` is its
exponential (reported as ``val_perplexity``, lower is better; 256 would be uniform guessing).

Example::

    task = transformer(seed=0)
    X_val, y_val = task.val.tensors          # (128, 64) int64 bytes, next bytes
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pydoc_data.topics import topics
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tuner.task import Task

__all__ = ["CONTEXT", "TinyGPT", "corpus", "next_byte_loss", "perplexity", "transformer"]

CONTEXT = 64
N_TRAIN = 256
N_VAL = 128
DATA_SEED = 0  # fixed: the data must not move with the trial's seed
VOCAB = 256  # bytes
WIDTH = 64
HEADS = 4
LAYERS = 2


@lru_cache(maxsize=1)
def corpus() -> tuple[bytes, str]:
    """The text as UTF-8 bytes, and its SHA-256 (the problem instance)."""
    text = "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")
    return text, hashlib.sha256(text).hexdigest()


@lru_cache(maxsize=1)
def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    text, _ = corpus()
    data = np.frombuffer(text, dtype=np.uint8)
    windows = len(data) // (CONTEXT + 1)
    chosen = np.random.default_rng(DATA_SEED).permutation(windows)[: N_TRAIN + N_VAL]
    rows = np.stack([data[i * (CONTEXT + 1) : (i + 1) * (CONTEXT + 1)] for i in chosen])
    rows_t = torch.tensor(rows, dtype=torch.int64)
    inputs, targets = rows_t[:, :-1], rows_t[:, 1:]
    return inputs[:N_TRAIN], targets[:N_TRAIN], inputs[N_TRAIN:], targets[N_TRAIN:]


class TinyGPT(nn.Module):
    """A small causal transformer over bytes: ``(batch, T)`` -> logits ``(batch, T, 256)``."""

    causal: torch.Tensor  # the (T, T) mask of future positions, a buffer

    def __init__(self, *, width: int = WIDTH, heads: int = HEADS, layers: int = LAYERS,
                 context: int = CONTEXT) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        nn.init.normal_(self.embed.weight, std=0.02)  # GPT-2's init: tied logits start near 0
        self.pos_embed = nn.Parameter(torch.zeros(context, width))
        nn.init.normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.register_buffer(
            "causal", nn.Transformer.generate_square_subsequent_mask(context), persistent=False
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.embed(tokens) + self.pos_embed[:length]
        mask = self.causal[:length, :length]
        x = self.blocks(x, mask=mask, is_causal=True)
        hidden = cast(torch.Tensor, self.norm(x))
        return hidden @ self.embed.weight.T  # the output layer tied to the embedding


def next_byte_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per byte (nats)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                       targets.reshape(-1))


def perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """``exp`` of the mean cross-entropy per byte (inf when it overflows)."""
    loss = float(next_byte_loss(logits, targets))
    return math.exp(loss) if loss < 700 else math.inf


def transformer(seed: int) -> Task:
    """A 2-layer byte-level transformer LM on ``pydoc_data.topics``; reports ``perplexity``."""
    torch.manual_seed(seed)
    X_train, y_train, X_val, y_val = _tensors()
    return Task(
        model=TinyGPT(),
        train=TensorDataset(X_train, y_train),
        val=TensorDataset(X_val, y_val),
        loss=next_byte_loss,
        metrics={"perplexity": perplexity},
    )
