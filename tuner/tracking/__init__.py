"""Every MLflow call of tuner lives here.

One experiment per job; a parent run per job (``tuner.level=job``), a nested run per
optimizer (``optimizer``), a nested run per trial (``trial``) and per multi-seed re-run of
the best setting (``final``). Trial and final runs carry ``tuner.job``, ``tuner.optimizer``,
``tuner.trial`` and ``tuner.state`` so the UI can filter and a script can join with Optuna.

Logging is off the trial's critical path: a single background thread owns the client and
executes the calls in order, and a trial's per-epoch metrics go out in one ``log_batch``
when the trial ends (against a tracking server one call costs ~55 ms).

An MLflow outage (the tracking server stopped, restarting, answering 5xx) is ridden out: a
call that fails because MLflow cannot be reached (:func:`tuner.retry.is_mlflow_outage`) is
made again, with backoff (0.5 s doubling to 8 s), for up to ``TUNER_MLFLOW_RETRY_S``, in
order; the logging thread's queue grows meanwhile and the job's end waits for it. Every call
is safe to repeat: a run is created with a ``tuner.create_id`` tag and looked up by it before
it is created again, metrics keep their timestamps (MLflow skips a metric it has), the rest
overwrites. MLflow's own HTTP retries are off (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` unless
set): on a refused connection they would hold one call ~4 minutes, past the budget, and
repeat a POST whose answer was lost. A longer outage makes :attr:`JobTracker.failure` an
:class:`MlflowUnavailableError` (later calls are tried once) that :meth:`JobTracker.check`
raises: the job fails (:mod:`tuner.engine.jobs`).

A run's epochs are logged once, whichever coordinator logs them: a run taken over from a
killed coordinator (:meth:`JobTracker.adopt`) gets only the points it does not have.

The modules: ``_tracker`` (:class:`JobTracker`, :func:`close_running`), ``_client`` (the
retrying client), ``_queue`` (the logging thread), ``_metrics`` (epochs and summaries as
MLflow metrics), ``_links`` (links to the UI and the saved leaderboard view, used by the CLI
and the API without a tracker).
"""

from tuner.tracking._links import (
    LEADERBOARD_VIEW,
    experiment_link,
    has_leaderboard_view,
    leaderboard_view_state,
    run_name,
    ui_base,
)
from tuner.tracking._tracker import JobTracker, close_running

__all__ = ["LEADERBOARD_VIEW", "JobTracker", "close_running", "experiment_link",
           "has_leaderboard_view", "leaderboard_view_state", "run_name", "ui_base"]
