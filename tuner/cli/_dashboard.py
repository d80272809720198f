"""``tuner dashboard [ID]``: optuna-dashboard on the jobs database, at a job's studies.

The studies of every job live in the jobs database (``TUNER_DB_URL``), one per optimizer,
named ``job-<id>-<optimizer>``. optuna-dashboard reads them live: the optimization history,
parallel coordinates, hyperparameter importance and the trial table of each study. Its pages
are ``/dashboard/studies/<study id>`` and ``/dashboard/compare-studies?ids=<id>,<id>,...``
(optuna-dashboard 0.21's routes), the study id being Optuna's number of the study.
"""

from __future__ import annotations

import importlib
from socketserver import ThreadingMixIn
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import typer
from rich.text import Text

from tuner.cli._app import app, friendly, is_loopback
from tuner.cli._display import console, err_console
from tuner.cli._follow import job_leaderboard
from tuner.cli._text import as_text, printable
from tuner.config import get_settings
from tuner.errors import TunerError
from tuner.spec import study_name

__all__ = ["job_studies", "study_links"]


def job_studies(storage: Any, job_id: int, optimizers: list[str]) -> list[tuple[str, int]]:
    """``(optimizer, Optuna study id)`` of a job's studies that exist, in ``optimizers``'
    order (a queued job has none yet)."""
    from optuna.exceptions import OptunaError

    found = []
    for name in optimizers:
        try:
            found.append((name, storage.get_study_id_from_name(study_name(job_id, name))))
        except (KeyError, OptunaError):
            continue
    return found


def study_links(base: str, studies: list[tuple[str, int]]) -> tuple[str, dict[str, str]]:
    """The page comparing a job's studies, and each study's own page."""
    base = base.rstrip("/")
    if not studies:
        return f"{base}/dashboard", {}
    ids = ",".join(str(study_id) for _, study_id in studies)
    return (f"{base}/dashboard/compare-studies?ids={ids}",
            {name: f"{base}/dashboard/studies/{study_id}" for name, study_id in studies})


def _open_storage(url: str) -> Any:
    import optuna

    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite")
        else {"pool_pre_ping": True}
    )
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """The dashboard's page asks for several studies at once: one thread per request."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@app.command(rich_help_panel="Jobs and results")
@friendly
def dashboard(
    job_id: Annotated[
        int | None, typer.Argument(help="The job to open (default: the latest).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port of optuna-dashboard.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    print_only: Annotated[bool, typer.Option("--print-link",
                                             help="Only print the links.")] = False,
) -> None:
    """optuna-dashboard on the jobs database, at the job's studies (one per optimizer).

    History, parallel coordinates, hyperparameter importance and the trial table of each
    study, live while the job runs. Ctrl-C stops it.
    """
    # The studies of this machine's jobs database: the local store's job, whatever TUNER_URL.
    from tuner.cli._local import local_job
    from tuner.store._engine import safe_url

    url = get_settings().database_url
    job = local_job(job_id)
    job_id = int(job["id"])
    optimizers = [row.optimizer for row in job_leaderboard(job)] or list(
        job["spec"].get("optimizers", []))
    storage = _open_storage(url)
    studies = job_studies(storage, job_id, optimizers)
    base = f"http://{_url_host(host)}:{port}"
    main, each = study_links(base, studies)
    console.print(Text.assemble("optuna-dashboard: ", as_text(main, "bold")), soft_wrap=True)
    if each:
        console.print(f"job {job_id}'s studies (job-{job_id}-<optimizer>):", highlight=False,
                      markup=False)
        for name, link in each.items():
            console.print(Text.assemble(f"  {printable(name):<10} ", as_text(link)),
                          soft_wrap=True)
    else:
        console.print(f"job {job_id} has no studies yet; they appear once it starts",
                      highlight=False)
    if print_only:
        return
    # optuna-dashboard ships no type information: imported by name, its API is Any here.
    optuna_dashboard = importlib.import_module("optuna_dashboard")
    if not is_loopback(host):
        err_console.print(f"warning: optuna-dashboard has no login; anyone who reaches "
                          f"{printable(host)} can read, rename or delete the studies",
                          highlight=False, markup=False)
    try:
        server = make_server(host, port, optuna_dashboard.wsgi(storage),
                             server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as e:
        raise TunerError(f"--port: cannot listen on {host}:{port}: {e.strerror or e}; "
                         "pass another --port") from None
    console.print(f"serving the studies of {printable(safe_url(url))} (Ctrl-C stops)",
                  highlight=False, markup=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _url_host(host: str) -> str:
    """An address to put in a link: a wildcard bind is reached on loopback; IPv6 in []."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
