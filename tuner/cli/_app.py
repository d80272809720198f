"""The root Typer app of ``tuner`` and what every command module shares.

Errors a user can cause print one red line on stderr and exit 1; ``--debug`` (or
``TUNER_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text

from tuner.cli._display import err_console
from tuner.cli._source import JobsSource
from tuner.cli._text import as_text
from tuner.config import get_settings
from tuner.errors import TunerError

__all__ = ["JobIdArgument", "ServerOption", "app", "friendly", "is_loopback", "open_source"]

app = typer.Typer(
    name="tuner",
    help="Which optimizer, with which settings, trains my model best?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}

#: ``--server`` of the client commands; without it they work on the local store.
ServerOption = Annotated[
    str | None,
    typer.Option("--server", envvar="TUNER_URL", show_envvar=True,
                 help="The tuner server, e.g. http://127.0.0.1:8000 (default: the local store)."),
]

#: A job id on the command line: a whole number the jobs table can hold (anything else is a
#: usage error naming the argument, before any database is opened).
JobIdArgument = Annotated[int, typer.Argument(
    min=1, max=2**31 - 1, help="The job's id (see tuner jobs).", show_default=False)]


F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def open_source(server: str | None) -> Iterator[JobsSource]:
    """The jobs of the server at ``server`` (``--server`` / ``TUNER_URL``, with the token of
    ``TUNER_API_TOKEN``), or of the local store when it is None or empty."""
    source: JobsSource
    if server:
        from tuner.cli._remote import RemoteJobs

        source = RemoteJobs(server)
    else:
        from tuner.cli._local import LocalJobs

        source = LocalJobs()
    try:
        yield source
    finally:
        source.close()


def is_loopback(host: str) -> bool:
    """Whether the address a server is to bind (``--host``) is a loopback one: ``localhost``,
    127.0.0.0/8 or ::1 (bracketed or not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def friendly(fn: F) -> F:
    """Turn a TunerError into one red line and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TunerError as e:
            if _state["debug"]:
                raise
            # The message quotes what the user wrote: it is text (no markup, no emoji code),
            # its control characters shown escaped (see tuner.cli._text).
            _error(as_text(e, keep_newlines=True))
            raise typer.Exit(code=1) from None
        except OSError as e:
            if _state["debug"]:
                raise
            # A file the user named (-o, a job file) that cannot be written or read.
            where = f"{e.filename}: " if e.filename else ""
            reason = e.strerror or str(e)
            _error(as_text(where + reason))
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def _error(message: Text) -> None:
    """The one red line of an error, on stderr."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    try:
        _state["debug"] = debug or get_settings().debug
    except TunerError:
        _state["debug"] = debug  # the command reports the bad setting as its error
