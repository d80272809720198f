"""The one way the tests wait: for a condition, polled, with a deadline and a message."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout: float, interval: float = 0.2,
               message: str | Callable[[], str] = "",
               alive: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None) -> T:
    """Poll ``condition`` every ``interval`` seconds until it returns something true; that.

    Fails after ``timeout`` seconds with ``message`` (a callable is asked only then, for
    what the test saw last), and at once when the process ``alive`` has exited: what it was
    to bring about will not come.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the process exited ({alive.returncode}) while waiting: "
                                 f"{message() if callable(message) else message}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: "
                                 f"{message() if callable(message) else message}")
        time.sleep(interval)
