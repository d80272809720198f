"""Narrow each optimizer's learning-rate range before the search (job option ``lr_range_test``).

Smith (2017, §3.3), fastai's ``lr_find`` and Lightning's ``LearningRateFinder``: one short
pass per optimizer with an exponentially growing rate finds where the loss blows up; rates
above that point only diverge, so the study's ``lr`` range ends there. The pass runs on the
job's workers (one optimizer per idle worker, side by side), starts from the optimizer's
library defaults with the rate swept over the space's ``lr`` range, and is part of the job's
time. What it found is kept with the study (user attribute ``tuner.lr_range``, so a resumed
job searches the same range), in MLflow (the job run's ``lr_range.<optimizer>`` parameters)
and in the job's result and report.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ray

import search_spaces

if TYPE_CHECKING:
    from tuner.engine.cluster import WorkerPool
    from tuner.engine.ledger import Ledger

__all__ = ["STUDY_ATTR", "narrow_lr_ranges"]

logger = logging.getLogger(__name__)

#: The study's user attribute that records the range test.
STUDY_ATTR = "tuner.lr_range"


def narrow_lr_ranges(ledger: Ledger, pool: WorkerPool) -> dict[str, dict[str, Any]]:
    """Run the range test of every optimizer whose study has not started; narrow its space.

    Returns, per optimizer, what the test found: ``low``, ``high`` (the range swept),
    ``blowup_lr``, ``min_loss_lr``, ``searched_high`` (the upper end the study searches),
    the curve (``lrs``, ``losses``) and ``seconds``. An optimizer whose ``lr`` is fixed, or
    whose study already has trials without a record, is left as it is. The job run's
    ``lr_range.<optimizer>`` parameters say what was found.
    """
    found: dict[str, dict[str, Any]] = {}
    to_test: dict[str, Any] = {}
    for name, study in ledger.studies.items():
        recorded = study.user_attrs.get(STUDY_ATTR)
        if recorded is not None:  # a resumed job: search the range it searched before
            found[name] = recorded
            _narrow(ledger, name, recorded["searched_high"])
            continue
        param = ledger.spaces[name].params.get("lr")
        if param is None or param.kind != "float" or study.trials:
            continue
        to_test[name] = param
    if to_test:
        workers = pool.workers
        refs = {}
        for i, (name, param) in enumerate(to_test.items()):
            space = ledger.spaces[name]
            defaults = space.defaults(train_size=ledger.train_size)
            config = space.optimizer_config(defaults, train_size=ledger.train_size).to_dict()
            low, high = param.bounds
            refs[name] = workers[i % len(workers)].range_test.remote(
                config, seed=ledger.spec.seed, low=float(low), high=float(high))
        results = dict(zip(refs, ray.get(list(refs.values())), strict=True))
        for name, result in results.items():
            blowup = result["blowup_lr"]
            low = result["low"]
            result["searched_high"] = (blowup if blowup is not None and blowup > low
                                       else result["high"])
            ledger.studies[name].set_user_attr(STUDY_ATTR, result)
            _narrow(ledger, name, result["searched_high"])
            found[name] = result
            logger.info("%s: the loss blew up at lr=%s; lr searched in [%.3g, %.3g]", name,
                        blowup, low, result["searched_high"])
    if found and not ledger.tracker.resumed:
        ledger.tracker.log_job_params({
            f"lr_range.{name}": (f"swept [{r['low']:.3g}, {r['high']:.3g}], blew up at "
                                 f"{_g(r['blowup_lr'])}, searched up to "
                                 f"{_g(r['searched_high'])}")
            for name, r in found.items()
        })
    return found


def _g(value: float | None) -> str:
    return "never" if value is None else f"{value:.3g}"


def _narrow(ledger: Ledger, name: str, high: float) -> None:
    """Give optimizer ``name`` the space whose ``lr`` range ends at ``high``."""
    overrides = {k: dict(v) for k, v in ledger.spec.space_overrides.get(name, {}).items()}
    low, old_high = ledger.spaces[name].params["lr"].bounds
    if high >= old_high:
        return
    overrides["lr"] = {"low": low, "high": high, "log": True}
    space = search_spaces.load(name, overrides)
    ledger.spaces[name] = space
    ledger.results[name].space = space
