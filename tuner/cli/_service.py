"""``tuner serve``, ``submit``, ``cancel`` and ``db``: the service and its client.

``submit``, ``cancel`` (and ``jobs``, ``status``, ``export``) talk to the server at
``TUNER_URL`` or ``--server``, sending ``TUNER_API_TOKEN``; without a server URL,
``cancel`` works on the local store.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tuner.cli._app import JobIdArgument, ServerOption, app, friendly, is_loopback
from tuner.cli._display import JobBars, console, err_console, leaderboard_table
from tuner.cli._text import shown
from tuner.config import get_settings
from tuner.errors import SpecError, TunerError
from tuner.results import JobProgress

__all__ = ["client_for", "follow_job", "job_progress", "local_job_view"]


db_app = typer.Typer(help="The jobs database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db", rich_help_panel="Service")

TERMINAL = ("succeeded", "failed", "cancelled")


def client_for(server: str) -> Any:
    """A :class:`tuner.client.TunerClient` for ``server`` with the token of TUNER_API_TOKEN."""
    from tuner.client import TunerClient

    return TunerClient(server, token=get_settings().api_token)


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
    import uvicorn

    from tuner.api import create_app
    from tuner.engine.service import Service

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

    # Ray's C++ failure handler prints a stack trace on every SIGTERM: a stop is no crash.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    service = Service(settings, max_jobs=max_jobs)
    service.start()
    api = create_app(settings, service=service, bind_host=host)
    from tuner.store._engine import safe_url

    err_console.print(
        f"tuner serving http://{host}:{port} (docs /docs) · jobs database "
        f"{safe_url(settings.database_url)} · up to {service.max_jobs} jobs at once"
        + ("" if settings.api_token else " · no TUNER_API_TOKEN: loopback only"),
        highlight=False, soft_wrap=True,
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
    from tuner.engine.service import service_task_problem
    from tuner.spec import load_job_file

    spec = load_job_file(job_file)
    problem = service_task_problem(spec.task, with_code=code is not None)
    if problem is not None:
        if code is None and spec.task.count(":") == 1:
            problem += "; or ship your code with it: tuner submit JOB.yaml --code DIR"
        raise SpecError([problem], source=str(job_file))
    if not server:
        raise TunerError(
            "no tuner server: set TUNER_URL or pass --server URL "
            f"(or run the job in this process: tuner run {job_file})"
        )
    document = spec.model_dump(mode="json")
    with client_for(server) as client:
        if code is not None:
            document["code"] = _ship_code(client, code, spec)
        job = client.submit(document, source=str(job_file))
        console.print(f"job {job['id']} submitted to {client.url} ({job['state']})",
                      highlight=False)
        if wait:
            follow_job(lambda: client.job(job["id"]), job["id"])


def _ship_code(client: Any, folder: Path, spec: Any) -> str:
    """Pack ``folder`` and upload it (a spinner meanwhile); the archive's SHA-256."""
    from tuner.code import pack_directory
    from tuner.task import is_module_path

    if not is_module_path(spec.task):
        err_console.print(
            f"[yellow]warning:[/] task {spec.task!r} is not a package.module:factory path; "
            f"the code in {folder} is shipped, but only code the task imports uses it",
            highlight=False)
    else:
        module = spec.task.partition(":")[0].replace(".", "/")
        if not ((folder / f"{module}.py").is_file() or (folder / module).is_dir()
                or spec.requirements):
            err_console.print(
                f"[yellow]warning:[/] task {spec.task!r}: neither {module}.py nor {module}/ "
                f"is in {folder}; the workers import it from their own environment",
                highlight=False)
    with err_console.status(f"packing {folder} ..."):
        archive = pack_directory(folder, max_bytes=get_settings().max_code_bytes)
    what = (f"{len(archive.files)} files, {_size(archive.size)} "
            f"({_size(archive.unpacked)} unpacked)")
    with err_console.status(f"uploading {folder}: {what} to {client.url} ..."):
        stored = client.upload_code(archive.data)
    err_console.print(f"code {stored['sha256'][:12]} uploaded: {what}", highlight=False)
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
    if server:
        with client_for(server) as client:
            job = client.cancel(job_id)
    else:
        from tuner import store

        settings = get_settings()
        store.upgrade(settings.database_url)
        with store.session_scope(settings.database_url) as session:
            job = store.request_cancel(session, job_id).to_dict()
    if job["state"] == "cancelled":
        console.print(f"job {job_id} cancelled")
    else:
        console.print(f"job {job_id} is {job['state']}: cancel requested; it stops within "
                      "seconds")


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
    console.print(f"jobs database {safe_url(settings.database_url)} is up to date",
                  highlight=False)


# -- following a job ------------------------------------------------------------------------


def job_progress(job: dict[str, Any]) -> JobProgress:
    """The :class:`~tuner.results.JobProgress` of a job as the API or the store shows it."""
    spec = job.get("spec") or {}
    return JobProgress.from_dict(job.get("progress"), job_id=job["id"],
                                 metric=spec.get("metric", ""), mode=spec.get("mode", "min"))


def local_job_view(job_id: int) -> dict[str, Any]:
    """A job of the local store in the shape ``GET /v1/jobs/{id}`` answers."""
    from tuner import store

    settings = get_settings()
    store.upgrade(settings.database_url)
    with store.session_scope(settings.database_url) as session:
        job = store.get_job(session, job_id)
        result = job.result or {}
        return job.to_dict() | {
            "spec": job.spec or {},
            "optimizers": (job.spec or {}).get("optimizers", []),
            "leaderboard": result.get("leaderboard"),
            "seconds": result.get("seconds"),
        }


def follow_job(fetch: Callable[[], dict[str, Any]], job_id: int, *,
               interval: float = 1.0) -> dict[str, Any]:
    """Show a job's progress bars until it ends, then its leaderboard.

    Raises:
        TunerError: the job failed or was cancelled (the CLI exits 1).
    """
    job = fetch()
    spec = job.get("spec") or {}
    optimizers = list(spec.get("optimizers", []))
    try:
        with JobBars(optimizers, int(spec.get("trials", 1)), spec.get("metric", "")) as bars:
            while True:
                bars.update(job_progress(job))
                if job["state"] in TERMINAL:
                    break
                time.sleep(interval)
                job = fetch()
    except KeyboardInterrupt:
        console.print(f"stopped following job {job_id}; it goes on (tuner cancel {job_id} "
                      "stops it)")
        raise typer.Exit(code=130) from None
    _print_outcome(job)
    return job


def _print_outcome(job: dict[str, Any]) -> None:
    spec = job.get("spec") or {}
    state = job["state"]
    if state == "failed":
        raise TunerError(f"job {job['id']} failed: {job.get('error') or 'no error recorded'}")
    if state == "cancelled":
        raise TunerError(f"job {job['id']} was cancelled")
    if job.get("leaderboard"):
        console.print(leaderboard_table(
            job["leaderboard"], metric=spec.get("metric", ""), mode=spec.get("mode", "min"),
            title=f"job {job['id']}: {shown(job['name'])} on {shown(job['task'])}",
        ))
        best = job["leaderboard"][0]["optimizer"]
        seconds = job.get("seconds")
        took = f"  ({seconds:.0f} s)" if seconds else ""
        console.print(f"best optimizer: [bold green]{best}[/]{took}")
    console.print(f"job {job['id']} {state}; export: tuner export {job['id']}")
