"""The Optuna side of a job: the storage, the sampler, the pruner and the studies.

One study per optimizer, named ``job-<id>-<optimizer>``, all with the same sampler seed and
trial budget, in the jobs database (Optuna's RDBStorage owns its unprefixed tables there).
A study records which job, optimizer, task, sampler and pruner it belongs to, so the stock
``optuna`` CLI and optuna-dashboard show it for what it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from tuner.spec import JobSpec

__all__ = ["make_pruner", "make_sampler", "open_storage", "open_studies"]


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on the jobs database (creates Optuna's tables on first use)."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def make_sampler(spec: JobSpec) -> optuna.samplers.BaseSampler:
    """The job's sampler, seeded with the job's seed (every study gets its own instance)."""
    seed = spec.seed
    match spec.sampler:
        case "tpe":
            # The constant liar keeps concurrent workers from asking for the same point.
            return optuna.samplers.TPESampler(
                seed=seed, constant_liar=spec.max_concurrent > 1, n_startup_trials=5
            )
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case "gp":
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=5, warn_independent_sampling=False
            )
        case "qmc":
            # AlgoPerf's baselines use quasi-random (Sobol) search.
            return optuna.samplers.QMCSampler(
                seed=seed, scramble=True, warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
    raise ValueError(spec.sampler)


def make_pruner(spec: JobSpec) -> optuna.pruners.BasePruner:
    """The job's pruner; Hyperband's maximum resource is the job's epoch budget."""
    match spec.pruner:
        case "none":
            return optuna.pruners.NopPruner()
        case "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=5, n_warmup_steps=max(1, spec.epochs // 5)
            )
        case "sha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
        case "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.epochs)
    raise ValueError(spec.pruner)


def open_studies(storage: optuna.storages.BaseStorage, job_id: int,
                 spec: JobSpec) -> dict[str, optuna.Study]:
    """Create (or, for a resumed job, load) the study of every optimizer of the job."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies: dict[str, optuna.Study] = {}
    for name in spec.optimizers:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study_name(job_id, name),
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
            direction=spec.direction,
            load_if_exists=True,
        )
        study.set_user_attr("tuner.job", job_id)
        study.set_user_attr("tuner.optimizer", name)
        study.set_user_attr("tuner.task", spec.task)
        # Optuna does not store a study's sampler and pruner: say which they were.
        study.set_user_attr("tuner.sampler", type(study.sampler).__name__)
        study.set_user_attr("tuner.pruner", type(study.pruner).__name__)
        studies[name] = study
    return studies
