"""Turn an optimizer config (a search space's output, an export entry) into ``torch.optim``.

The one place both sides meet: the workers build every trial's optimizer with it, and
:func:`tuner.load_optimizer` builds an exported one with it. It imports torch, so import it
only where an optimizer is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["build_optimizer", "scheduler_step"]

_MODULES = {"torch.optim": torch.optim, "torch.optim.lr_scheduler": torch.optim.lr_scheduler}


def build_optimizer(
    config: Mapping[str, Any], params: Any
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Instantiate ``{"class": "torch.optim.X", "kwargs": {...}, "scheduler": {...}}``.

    The scheduler is ``{"class", "kwargs", "step"}``; a ``SequentialLR``'s ``schedulers`` are
    scheduler entries themselves (``{"class", "kwargs"}``), built on the same optimizer.
    Call ``scheduler.step()`` as :func:`scheduler_step` says: per ``epoch`` or per ``batch``.

    Raises:
        ValueError: a class outside ``torch.optim`` / ``torch.optim.lr_scheduler``.
    """
    optimizer_cls = _torch_attr(config["class"])
    kwargs = dict(config.get("kwargs") or {})
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    optimizer = optimizer_cls(params, **kwargs)
    scheduler = None
    if config.get("scheduler"):
        scheduler = _scheduler(config["scheduler"], optimizer)
    return optimizer, scheduler


def scheduler_step(config: Mapping[str, Any]) -> str:
    """When the config's scheduler steps: ``"epoch"`` (the default, and older exports) or
    ``"batch"`` (after every optimizer step)."""
    scheduler = config.get("scheduler") or {}
    step = scheduler.get("step", "epoch")
    if step not in ("epoch", "batch"):
        raise ValueError(f"scheduler.step: got {step!r}; allowed: epoch, batch")
    return str(step)


def _scheduler(entry: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    cls = _torch_attr(entry["class"])
    kwargs = dict(entry.get("kwargs") or {})
    if "schedulers" in kwargs:  # SequentialLR / ChainedScheduler: scheduler entries inside
        kwargs["schedulers"] = [_scheduler(inner, optimizer) for inner in kwargs["schedulers"]]
    return cls(optimizer, **kwargs)


def _torch_attr(dotted: str) -> Any:
    module_path, _, name = dotted.rpartition(".")
    module = _MODULES.get(module_path)
    if module is None or not hasattr(module, name):
        raise ValueError(f"not a torch.optim class: {dotted!r}")
    return getattr(module, name)
