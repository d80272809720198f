"""Turn an optimizer config (a search space's output, an export entry) into ``torch.optim``.

The one place both sides meet: the workers build every trial's optimizer with it, and
:func:`tuner.load_optimizer` builds an exported one with it. It imports torch, so import it
only where an optimizer is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["build_optimizer"]

_MODULES = {"torch.optim": torch.optim, "torch.optim.lr_scheduler": torch.optim.lr_scheduler}


def build_optimizer(
    config: Mapping[str, Any], params: Any
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Instantiate ``{"class": "torch.optim.X", "kwargs": {...}, "scheduler": {...}}``.

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
        scheduler_cls = _torch_attr(config["scheduler"]["class"])
        scheduler = scheduler_cls(optimizer, **config["scheduler"].get("kwargs", {}))
    return optimizer, scheduler


def _torch_attr(dotted: str) -> Any:
    module_path, _, name = dotted.rpartition(".")
    module = _MODULES.get(module_path)
    if module is None or not hasattr(module, name):
        raise ValueError(f"not a torch.optim class: {dotted!r}")
    return getattr(module, name)
