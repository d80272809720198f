"""The logging thread of a job's tracker: MLflow calls made in order, off the trial's
critical path (against a tracking server one call costs ~55 ms)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tuner.errors import MlflowUnavailableError

__all__ = ["LoggingQueue"]

logger = logging.getLogger(__name__)


class LoggingQueue:
    """One thread that makes the calls it is given, in order; a call that fails is logged
    and its message kept in :attr:`errors`, and the calls after it are made all the same."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-mlflow")
        self._pending: list[Future[Any]] = []
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def submit(self, call: Callable[[], None]) -> None:
        """Make ``call()`` after the calls submitted before it."""

        def guarded() -> None:
            try:
                call()
            except Exception as e:  # noqa: BLE001 - an outage: the job checks its failure
                # (logged once, when the retries gave up); a refused request: the job goes on.
                log = logger.debug if isinstance(e, MlflowUnavailableError) else logger.warning
                log("MLflow logging failed: %s", e)
                self.errors.append(str(e))

        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._executor.submit(guarded))

    def flush(self) -> None:
        """Wait until every call submitted so far has been made."""
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Make the calls still queued, then end the thread."""
        self.flush()
        self._executor.shutdown(wait=True)
