"""``tuner serve``, ``submit``, ``cancel`` and ``db``: the service and its client.

``submit``, ``cancel`` (and ``jobs``, ``status``, ``export``, ``report``) talk to the jobs
source (:mod:`tuner.cli._source`): the server at ``TUNER_URL`` or ``--server``, sending
``TUNER_API_TOKEN``, or without a server URL the local store (where ``submit`` says it needs
a server).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from tuner.cli._app import (
    JobIdArgument,
    ServerOption,
    app,
    friendly,
    is_loopback,
    open_source,
)
from tuner.cli._display import console, err_console
from tuner.cli._follow import follow_job
from tuner.cli._source import JobsSource
from tuner.cli._text import as_text, printable
from tuner.config import get_settings
from tuner.errors import SpecError, TunerError
from tuner.spec import JobSpec, load_job_file
from tuner.task import is_module_path
from tuner.task_checks import service_task_problem

db_app = typer.Typer(help="The jobs database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db", rich_help_panel="Service")


# -- serve ----------------------------------------------------------------------------------


@app.command(rich_help_panel="Service")
@friendly
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_jobs: Annotated[int | None, typer.Option(
        "--max-jobs", min=1, help="Jobs run at once (default: TUNER_MAX_JOBS, else 2).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the REST API and the coordinator (the queue of jobs) in one process.

    Migrates the jobs database, requeues jobs a previous server left running, starts (or
    joins, with RAY_ADDRESS) Ray, and serves /v1 (OpenAPI at /openapi.json, docs at /docs).
    Writes need TUNER_API_TOKEN; without it the server binds loopback addresses only.
    Ctrl-C or SIGTERM stops it: running jobs are requeued for the next start.
    """
    # Ray's C++ failure handler prints a stack trace on every SIGTERM (a stop is no crash)
    # and aborts the exit after a job ran. Ray reads this when it is imported, which the
    # engine does: it is set before.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import uvicorn

    from tuner.api import create_app
    from tuner.engine.service import Service
    from tuner.store._engine import safe_url

    settings = get_settings()
    if not settings.api_token and not is_loopback(host):
        raise TunerError(
            f"--host: refusing to serve on {host} without TUNER_API_TOKEN: anyone who reaches "
            "it could run jobs; set TUNER_API_TOKEN, or bind 127.0.0.1"
        )
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise TunerError(f"--log-level: got {log_level!r}; allowed: debug, info, warning, error")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    service_logger = logging.getLogger("tuner")
    service_logger.addHandler(handler)
    service_logger.setLevel(level)

    service = Service(settings, max_jobs=max_jobs)
    service.start()
    api = create_app(settings, service=service, bind_host=host)
    err_console.print(
        printable(f"tuner serving http://{host}:{port} (docs /docs) · jobs database "
                  f"{safe_url(settings.database_url)} · up to {service.max_jobs} jobs at once")
        + ("" if settings.api_token else " · no TUNER_API_TOKEN: loopback only"),
        highlight=False, soft_wrap=True, markup=False,
    )
    # uvicorn stops on SIGTERM, then raises it again with the handler it found: make that
    # an exit through the `finally` below rather than the default sudden death.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(api, host=host, port=port, log_level=log_level.lower(),
                    access_log=level == "DEBUG")
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()  # done by the app's shutdown already, unless uvicorn never started
        err_console.print("tuner server stopped", highlight=False)


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(0)  # a stop that was asked for


# -- submit ---------------------------------------------------------------------------------


@app.command(rich_help_panel="Service")
@friendly
def submit(
    job_file: Annotated[Path, typer.Argument(help="The job file (YAML).")],
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow the job with progress bars until it ends.")] = False,
    server: ServerOption = None,
    code: Annotated[Path | None, typer.Option(
        "--code", metavar="DIR",
        help="Ship this folder with the job (zipped; .git, virtualenvs, .tuner and "
             "__pycache__ left out): the workers run in it, so task: package.module:factory "
             "may name your own code.")] = None,
) -> None:
    """Submit a job to the tuner server; prints its id.

    The file is validated here first (the same checks as the server's). The server runs
    built-in and installed tasks (see tuner tasks), and package.module:factory paths from the
    code shipped with --code (the folder is uploaded first; the server never imports it,
    its Ray workers do). With --wait, exits 0 when the job succeeds and 1 when it fails or
    is cancelled.

    Example: tuner submit job.yaml --code . --wait
    """
    spec = load_job_file(job_file)
    problem = service_task_problem(spec.task, with_code=code is not None)
    if problem is not None:
        if code is None and spec.task.count(":") == 1:
            problem += "; or ship your code with it: tuner submit JOB.yaml --code DIR"
        raise SpecError([problem], source=str(job_file))
    document = spec.model_dump(mode="json")
    with open_source(server) as source:
        if code is not None:
            document["code"] = _ship_code(source, code, spec, job_file=str(job_file))
        job = source.submit(document, source=str(job_file))
        console.print(Text.assemble(f"job {job['id']} submitted to ", as_text(source.where),
                                    f" ({printable(job['state'])})"))
        if wait:
            follow_job(source, job["id"])


def _warn(*parts: str | Text) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", *parts))


def _ship_code(source: JobsSource, folder: Path, spec: JobSpec, *, job_file: str) -> str:
    """Pack ``folder`` and upload it (a spinner meanwhile); the archive's SHA-256."""
    from tuner.code import pack_directory

    where = as_text(folder)
    if not is_module_path(spec.task):
        _warn(f"task {printable(repr(spec.task))} is not a package.module:factory path; the "
              "code in ", where, " is shipped, but only code the task imports uses it")
    else:
        module = spec.task.partition(":")[0].replace(".", "/")
        if not ((folder / f"{module}.py").is_file() or (folder / module).is_dir()
                or spec.requirements):
            _warn(f"task {printable(repr(spec.task))}: neither {printable(module)}.py nor "
                  f"{printable(module)}/ is in ", where,
                  "; the workers import it from their own environment")
    with err_console.status(f"packing {escape(where.plain)} ..."):
        archive = pack_directory(folder, max_bytes=get_settings().max_code_bytes)
    what = (f"{len(archive.files)} files, {_size(archive.size)} "
            f"({_size(archive.unpacked)} unpacked)")
    with err_console.status(f"uploading {escape(where.plain)}: {what} to "
                            f"{escape(printable(source.where))} ..."):
        stored = source.upload_code(archive.data, source=job_file)
    err_console.print(f"code {printable(stored['sha256'][:12])} uploaded: {what}",
                      highlight=False, markup=False)
    return str(stored["sha256"])


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KiB" if size < 1024**2 else f"{size / 1024**2:.1f} MiB"


# -- cancel ---------------------------------------------------------------------------------


@app.command(rich_help_panel="Service")
@friendly
def cancel(
    job_id: JobIdArgument,
    server: ServerOption = None,
) -> None:
    """Cancel a job: a queued one at once, a running one within seconds.

    A running job's started trials end in Optuna and MLflow, then it is cancelled. A finished
    job is an error.
    """
    with open_source(server) as source:
        job = source.cancel(job_id)
    if job["state"] == "cancelled":
        console.print(f"job {job_id} cancelled")
    else:
        console.print(f"job {job_id} is {printable(job['state'])}: cancel requested; it stops "
                      "within seconds", markup=False)


# -- db -------------------------------------------------------------------------------------


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Create or migrate the tuner_* tables of TUNER_DB_URL to the newest revision.

    Optuna's tables in the same database are left alone. Safe to run again; the server
    also runs it on start.
    """
    from tuner import store
    from tuner.store._engine import safe_url

    settings = get_settings()
    settings.ensure_home()
    store.upgrade(settings.database_url)
    console.print(f"jobs database {printable(safe_url(settings.database_url))} is up to date",
                  highlight=False, markup=False)
