"""Resume a job whose coordinator was killed: take over what it left, lose nothing.

Its finished trials count as they ended; its running trials are told FAIL (``coordinator
restarted``), counted as LOST and enqueued again; every trial ends up with exactly one MLflow
run in a final state; final re-runs that were in flight are ended and superseded (the
resumed job re-runs every optimizer's best setting anew).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner.engine.ledger import CURVE
from tuner.engine.studies import open_storage
from tuner.results import TrialOutcome, TrialRecord
from tuner.spec import study_name
from tuner.tracking import JobTracker, close_running, run_name

if TYPE_CHECKING:
    from tuner.config import Settings
    from tuner.engine.ledger import Ledger

__all__ = ["RESTARTED", "close_books", "recover"]

#: Why a trial found RUNNING by a resumed job was lost.
RESTARTED = "coordinator restarted"


def recover(ledger: Ledger) -> None:
    """Count and close what an earlier coordinator of the job left in ``ledger``'s books."""
    _supersede_finals(ledger)
    recorded = ledger.tracker.recorded_runs("trial")
    for name in ledger.studies:
        _recover_study(ledger, name, recorded)


def _supersede_finals(ledger: Ledger) -> None:
    tracker = ledger.tracker
    for run in tracker.runs("final"):
        key = f"recovered/final/{run.info.run_id}"
        tracker.adopt(key, run.info.run_id)
        if run.info.status == "RUNNING":
            tracker.run_finished(key, state="FAIL", epochs=[],
                                 tags={"tuner.reason": RESTARTED, "tuner.superseded": "true"})
        else:
            tracker.tag(key, {"tuner.superseded": "true"})


def _recover_study(ledger: Ledger, name: str, recorded: dict[tuple[str, int], Any]) -> None:
    tracker, spec = ledger.tracker, ledger.spec
    study, space = ledger.studies[name], ledger.spaces[name]
    progress = ledger.progress.optimizers[name]
    for frozen in study.get_trials(deepcopy=False):
        if frozen.state == TrialState.WAITING:
            continue  # enqueued, not started: the next ask takes it
        attrs = dict(frozen.user_attrs)
        if frozen.state == TrialState.RUNNING:
            trial = optuna.trial.Trial(study, frozen._trial_id)
            trial.set_user_attr("tuner_state", TrialOutcome.LOST.value)
            trial.set_user_attr("reason", RESTARTED)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(frozen.params, user_attrs={"rerun_of": frozen.number},
                                skip_if_exists=False)
            attrs |= {"tuner_state": TrialOutcome.LOST.value, "reason": RESTARTED}
        outcome = TrialOutcome(attrs.get("tuner_state") or frozen.state.name)
        reason = attrs.get("reason")
        value = frozen.value if outcome is TrialOutcome.COMPLETE else None
        progress.count(outcome, number=frozen.number, value=value, mode=spec.mode)
        if set(frozen.params) == set(space.distributions()):
            hyper = space.hyperparameters(frozen.params, train_size=ledger.train_size)
        else:
            # Killed inside `ask`, between two parameters: what was written is all there is
            # (its re-run samples the rest).
            hyper = dict(frozen.params)
        # Its epochs as the pruner saw them, or as the ledger kept them without a pruner:
        # the killed coordinator may not have logged them to MLflow (what it did log is not
        # logged again: an adopted run gets the points it lacks).
        points = sorted(frozen.intermediate_values.items()) or [
            (int(epoch), value) for epoch, value in attrs.get(CURVE, [])]
        curve = [value for _, value in points]
        ledger.results[name].trials.append(TrialRecord(
            number=frozen.number, state=outcome.value, value=value, hyperparameters=hyper,
            epochs=len(curve), seconds=0.0, curve=curve, finished_at=0.0,
        ))
        key = f"{name}/trial/{frozen.number}"
        tags = {"tuner.reason": reason} if reason else {}
        epochs = [{"epoch": epoch, "metrics": {spec.metric: value}}
                  for epoch, value in points if value is not None
                  ] if outcome in (TrialOutcome.COMPLETE, TrialOutcome.PRUNED) else []
        summary = {f"final_{spec.metric}": value} if value is not None else {}
        run = recorded.get((name, frozen.number))
        if run is None:  # its creation was still queued when the coordinator died
            tracker.run_started(
                key, optimizer=name, level="trial", number=frozen.number,
                name=run_name(name, frozen.number, hyper), params=hyper,
                tags={"tuner.seed": str(attrs.get("seed", "")),
                      "tuner.optuna_study": study.study_name},
            )
            tracker.run_finished(key, state=outcome.mlflow_state, epochs=epochs, tags=tags,
                                 summary=summary)
        else:
            tracker.adopt(key, run.info.run_id)
            if run.info.status == "RUNNING":
                tracker.run_finished(key, state=outcome.mlflow_state, epochs=epochs, tags=tags,
                                     summary=summary)


def close_books(settings: Settings, job_id: int, *, job_name: str, optimizers: list[str],
                reason: str) -> tuple[int, int]:
    """End what a job that ended without its coordinator's clean-up left open (the database
    was away when it failed, or no thread ran it any more): its RUNNING and WAITING Optuna
    trials become FAIL (``tuner_state`` FAIL, ``reason``), its RUNNING MLflow runs FAILED.
    Nothing of the job stays RUNNING. Returns (trials, runs) ended.
    """
    storage = open_storage(settings.database_url)
    trials = 0
    for name in optimizers:
        try:
            study_id = storage.get_study_id_from_name(study_name(job_id, name))
        except KeyError:
            continue  # never started
        for frozen in storage.get_all_trials(study_id, deepcopy=False,
                                             states=(TrialState.RUNNING, TrialState.WAITING)):
            storage.set_trial_user_attr(frozen._trial_id, "tuner_state",
                                        TrialOutcome.FAIL.value)
            storage.set_trial_user_attr(frozen._trial_id, "reason", reason[:500])
            storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
            trials += 1
    tracker = JobTracker(settings.tracking_uri, settings.artifact_root, job_id=job_id,
                         job_name=job_name)
    try:
        runs = close_running(tracker, reason=reason)
    finally:
        tracker.close()
    return trials, runs
