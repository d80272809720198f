"""Hyperparameter importance: Optuna's fANOVA evaluator on each optimizer's study.

:func:`importances` takes a study as data; :func:`job_importances` opens a job's studies
(``job-<id>-<optimizer>``) and is the one place of the analysis that reads Optuna's storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import optuna

from tuner.spec import study_name

__all__ = ["Importances", "importances", "job_importances"]

#: Per optimizer: parameter -> importance (they sum to 1), or why there are none (a note).
Importances = dict[str, dict[str, float] | str]


def importances(study: optuna.Study, *, seed: int = 0) -> dict[str, float] | str:
    """fANOVA importances of a study's parameters, or why there are none (a note)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3:
        return f"too few complete trials ({len(complete)}; needs 3)"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (ValueError, RuntimeError) as e:  # e.g. every trial has the same value
        return f"not computable: {e}"


def job_importances(job_id: int, names: Iterable[str],
                    storage_url: str | None) -> tuple[Importances, list[str]]:
    """The importances of job ``job_id``'s optimizers ``names`` (seed 0), and notes: for an
    optimizer without a study or without enough complete trials, and when there is no
    storage to read (nothing is computed then)."""
    if not storage_url:
        return {}, ["no study storage given: hyperparameter importance skipped"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    found: Importances = {}
    notes: list[str] = []
    for name in names:
        try:
            study = optuna.load_study(study_name=study_name(job_id, name), storage=storage_url)
        except KeyError:
            notes.append(f"{name}: no study {study_name(job_id, name)} in the storage")
            continue
        found[name] = importances(study)
        if isinstance(found[name], str):
            notes.append(f"{name}: hyperparameter importance {found[name]}")
    return found, notes
