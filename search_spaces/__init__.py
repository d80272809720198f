"""Search spaces: one YAML file per optimizer, and the loader that turns one into Optuna
distributions and ``torch.optim`` keyword arguments.

A file (``search_spaces/<name>.yaml``) names a ``torch.optim`` class and gives each parameter a
distribution; parameter names are shared by every file (``lr``, ``batch_size``,
``weight_decay``, ``beta1``/``beta2``, ``lr_decay``, and torch keyword names such as
``momentum``, ``alpha``, ``eps``, ``rho``). A user adds an optimizer by adding a file. Every
space also takes ``schedule`` (exponential | warmup_cosine | constant) and ``warmup`` without
declaring them; by default the schedule is exponential, driven by ``lr_decay``.

Example:
    >>> import optuna, search_spaces
    >>> space = search_spaces.load("adam", {"lr": {"low": 1.0e-4, "high": 1.0e-2}})
    >>> trial = optuna.create_study().ask(space.distributions())  # doctest: +SKIP
    >>> cfg = space.optimizer_config(trial.params, train_size=1437)  # doctest: +SKIP
    >>> cfg.to_dict()  # doctest: +SKIP
    {'class': 'torch.optim.Adam', 'kwargs': {'lr': ..., 'betas': [..., ...], ...}, ...}

``import search_spaces`` is light: optuna, torch and yaml are imported when first needed.
"""

from __future__ import annotations

from search_spaces._loader import available, load, load_file, validate_overrides
from search_spaces._params import FULL, ParamSpec
from search_spaces._space import (
    SCHEDULER_CLASS,
    SCHEDULES,
    OptimizerConfig,
    SearchSpace,
    schedule_config,
)

__all__ = [
    "FULL",
    "SCHEDULER_CLASS",
    "SCHEDULES",
    "OptimizerConfig",
    "ParamSpec",
    "SearchSpace",
    "available",
    "load",
    "load_file",
    "schedule_config",
    "validate_overrides",
]
