"""The ``tuner`` command line (Typer + Rich).

Errors a user can cause print one red line on stderr and exit 1; ``--debug`` shows the
traceback instead. The root app lives in :mod:`tuner.cli._app`; each command group in a
module of its own, imported here to register its commands.
"""

from __future__ import annotations

from tuner.cli._app import app

# Importing the command modules registers their commands on `app`, in the order of the
# help's panels: tune, results, service, catalog.
# isort: off
from tuner.cli import _jobs  # noqa: F401
from tuner.cli import _dashboard, _report, _service  # noqa: F401
from tuner.cli import _catalog  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="tuner")
