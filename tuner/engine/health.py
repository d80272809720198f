"""How the loop of ``tuner serve`` is doing, for ``/healthz``: when it last came round, what
its last round met, and why the service cannot work now."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tuner.errors import DatabaseUnavailableError

__all__ = ["STUCK_AFTER_S", "LoopHealth"]

#: The loop's health is the service's: its log says so.
logger = logging.getLogger("tuner.engine.service")

#: A loop that has not come round for this long is stuck (a call that does not return).
STUCK_AFTER_S = 60.0


class LoopHealth:
    """How the service's loop is doing: when it last came round, what its last round met."""

    def __init__(self) -> None:
        self.beat = time.monotonic()  # when the loop last came round
        self.loop_error: str | None = None  # the last round failed with this
        self.database_error: str | None = None  # the database was away in the last round

    def failed(self, error: Exception) -> None:
        if isinstance(error, DatabaseUnavailableError):  # away: the loop retries, backing off
            if self.database_error is None:
                logger.warning("coordinator loop: %s; retrying", error)
            self.database_error = str(error)
            return
        message = f"{type(error).__name__}: {' '.join(str(error).split())}"
        if message != self.loop_error:
            logger.error("coordinator loop: %s; going on", message, exc_info=error)
        self.loop_error = message

    def ok(self) -> None:
        if self.database_error or self.loop_error:
            logger.info("coordinator loop: working again")
        self.database_error = self.loop_error = None

    def describe(self, thread: threading.Thread | None, *, stopping: bool, ray: str,
                 ray_address: str | None) -> dict[str, Any]:
        """The loop's part of ``/healthz``: its state, whether it stops, the problems."""
        started, alive = thread is not None, thread is not None and thread.is_alive()
        stuck = time.monotonic() - self.beat > STUCK_AFTER_S
        return {
            "loop": "stopped" if started and not alive else "stuck" if stuck else "running",
            "stopping": stopping,
            "problems": self.problems(started=started, alive=alive, stopping=stopping,
                                      ray=ray, ray_address=ray_address),
        }

    def problems(self, *, started: bool, alive: bool, stopping: bool, ray: str,
                 ray_address: str | None) -> list[str]:
        """Why the service cannot work now (``/healthz`` answers 503 when there are any)."""
        problems = []
        quiet_s = time.monotonic() - self.beat
        if started and not alive and not stopping:
            problems.append("the coordinator loop has stopped"
                            + (f": {self.loop_error}" if self.loop_error else ""))
        elif alive and quiet_s > STUCK_AFTER_S and not stopping:
            problems.append(f"the coordinator loop has not come round for {quiet_s:.0f} s")
        elif self.loop_error:
            problems.append(f"the coordinator loop failed: {self.loop_error}")
        if ray.startswith("error: "):
            problems.append(f"Ray: {ray.removeprefix('error: ')}")
        elif ray != "up" and not stopping:
            problems.append(f"Ray is not up yet (joining RAY_ADDRESS={ray_address})"
                            if ray_address else "Ray is not up yet (starting a local Ray)")
        if self.database_error:
            problems.append(self.database_error)
        if stopping:
            problems.append("the server is stopping")
        return problems
