"""The errors tuner raises.

Every error a user can cause is a :class:`TunerError`; the CLI prints its message as one
red line and exits 1, the REST API answers with the same text.

::

    TunerError
     ├── SpecError(TunerError, ValueError)        a job file or REST body is invalid
     ├── SearchSpaceError(TunerError, ValueError)  a search-space file or override is invalid
     ├── TaskError(TunerError, LookupError)        an unknown or broken task
     ├── CodeError(TunerError, ValueError)         a code archive is refused (size, paths)
     ├── JobNotFoundError(TunerError, LookupError) no job with that id in this store
     ├── JobStateError(TunerError, RuntimeError)   the job is not in a state that allows it
     │    └── JobCancelled(JobStateError)      the job was cancelled while it ran
     ├── JobInterrupted(TunerError, RuntimeError)  the process running a job is stopping; the
     │                                             job goes back to the queue
     ├── TrialPruned(TunerError, RuntimeError)     raised by ``trial.report`` inside a user's
     │                                             training loop: stop training this trial
     ├── DatabaseUnavailableError(TunerError, ConnectionError)  the jobs database cannot be
     │                                             reached (down, refusing connections, locked)
     └── MlflowUnavailableError(TunerError, ConnectionError)  MLflow could not be reached
                                                   for TUNER_MLFLOW_RETRY_S: a job's runs are
                                                   incomplete
"""

from __future__ import annotations


class TunerError(Exception):
    """Base class of every error a user of tuner can cause."""


class SpecError(TunerError, ValueError):
    """A job specification is invalid. ``problems`` lists every bad field, one line each."""

    def __init__(self, problems: list[str], *, source: str = "job") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "; ".join(self.problems)
        super().__init__(f"{source}: {lines}")


class SearchSpaceError(TunerError, ValueError):
    """A search-space file, or an override of one, is invalid."""


class TaskError(TunerError, LookupError):
    """A task name does not resolve, or its factory does not build a valid Task."""


class CodeError(TunerError, ValueError):
    """A code folder or archive shipped with a job is refused; ``too_large`` when it is over
    the size limit (the API answers 413, else 422)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class JobNotFoundError(TunerError, LookupError):
    """No job with the given id exists in the configured store."""


class JobStateError(TunerError, RuntimeError):
    """The job's state does not allow the requested operation."""


class JobCancelled(JobStateError):
    """The job was cancelled while it ran (``tuner cancel``, the API, or Ctrl-C)."""


class JobInterrupted(TunerError, RuntimeError):
    """The process running the job is stopping; the job is requeued and resumes later."""


class TrialPruned(TunerError, RuntimeError):
    """Raised by :meth:`tuner.Trial.report` inside a training loop: this trial stops here.

    The pruner stopped it, the job ended or timed out, or its reported loss diverged. Let it
    propagate (clean up in ``finally`` if you must); a loop that swallows it is stopped at
    its next ``report``.
    """


class DatabaseUnavailableError(TunerError, ConnectionError):
    """The jobs database cannot be reached now (server down or refusing connections, a
    dropped connection, a lock held too long): the same work may succeed later."""


class MlflowUnavailableError(TunerError, ConnectionError):
    """MLflow could not be reached for ``TUNER_MLFLOW_RETRY_S``: a call of a job was not
    made, so its MLflow runs are incomplete."""
