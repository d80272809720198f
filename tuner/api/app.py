"""The FastAPI application: routers, error answers, the OpenAPI document.

Errors answer with the CLI's texts:

- 401 ``{"detail": "..."}`` with ``WWW-Authenticate: Bearer``: a write without the right token;
- 403 ``{"detail": "Origin: got 'http://evil.example'; ..."}``: a write from a web page of a
  foreign origin, or (without a token) a ``Host`` that is not this server's (see
  :mod:`tuner.api._guard`);
- 404 ``{"detail": "no job 7 in this store (see tuner jobs)"}``;
- 409 ``{"detail": "job 7 is running; only a succeeded job has an export"}``;
- 413 ``{"detail": "request body too large; the limit is 1048576 bytes"}``;
- 415 ``{"detail": "Content-Type: got 'text/plain'; allowed: application/json"}``;
- 422 ``{"detail": [{"loc": ["body", "optimizers", 0], "msg": "optimizers[0]: unknown
  optimizer 'nosuchopt'; available: ... (see tuner spaces)", "type": "value_error"}, ...]}``:
  one item per bad field (FastAPI's own shape); ``msg`` is the CLI's line, field first;
- 503 ``{"detail": "cannot connect to the jobs database ..."}``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import search_spaces
from tuner import store
from tuner.api._guard import RequestGuard
from tuner.api.routes import catalog, code, health, jobs, report
from tuner.config import Settings, get_settings
from tuner.errors import JobNotFoundError, JobStateError, SpecError, TunerError
from tuner.spec import JobSpec
from tuner.task import available_tasks, reported_metrics

if TYPE_CHECKING:
    from tuner.engine.service import Service

__all__ = ["MAX_BODY_BYTES", "create_app", "problem_items"]

#: The largest request body accepted (a job document is a few hundred bytes).
MAX_BODY_BYTES = 1024 * 1024

_FIELD = re.compile(r"^[A-Za-z_][\w.\[\]-]*$")


def problem_items(problems: list[str], *, where: str = "body") -> list[dict[str, Any]]:
    """422 items from the spec's problem lines: ``"optimizers[0]: ..."`` -> loc
    ``["body", "optimizers", 0]``; the line itself is the ``msg``. ``where`` is the part of
    the request: ``body``, ``query`` or ``path``."""
    items = []
    for line in problems:
        head, sep, _ = line.partition(": ")
        loc: list[str | int] = [where]
        if sep and _FIELD.match(head):
            for part in re.split(r"[.\[\]]+", head):
                if part:
                    loc.append(int(part) if part.isdigit() else part)
        items.append({"loc": loc, "msg": line, "type": "value_error"})
    return items


def create_app(
    settings: Settings | None = None,
    *,
    service: Service | None = None,
    on_submit: Callable[[], None] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    bind_host: str | None = None,
) -> FastAPI:
    """The REST API on ``settings``' jobs database (default: from the environment).

    Args:
        settings: Where the jobs database is, and the API token.
        service: The coordinator loop running in this process (``tuner serve``, which starts
            it), shown by ``/healthz``, woken when a job is submitted, stopped when the app
            shuts down. Tests leave it out: jobs stay queued.
        on_submit: Called after a job is stored (default: ``service.wake``).
        max_body_bytes: Larger request bodies get 413.
        bind_host: The address ``tuner serve`` binds; without a token, requests must name
            it (or a loopback address) as their ``Host``.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_home()
        await run_in_threadpool(store.upgrade, settings.database_url)
        yield
        if service is not None:
            # Here, not after uvicorn returns: uvicorn re-raises SIGTERM once it has stopped.
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="tuner",
        summary="Which optimizer, with which settings, trains my model best?",
        description=(
            "Submit hyperparameter-tuning jobs comparing torch.optim optimizers, watch them, "
            "cancel them and fetch the best configuration of each optimizer. Writes need "
            "`Authorization: Bearer $TUNER_API_TOKEN`."
        ),
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.on_submit = on_submit or (service.wake if service is not None else None)
    app.state.max_body_bytes = max_body_bytes
    app.state.storage_lock = threading.Lock()
    app.state.optuna_storage = None
    app.include_router(jobs.router)
    app.include_router(report.router)
    app.include_router(code.router)  # its own body limit: TUNER_MAX_CODE_MB
    app.include_router(catalog.router)
    app.include_router(health.router)
    _add_error_handlers(app)

    app.add_middleware(RequestGuard, allowed_origins=settings.allowed_origins,
                       token_set=bool(settings.api_token), bind_host=bind_host)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _version() -> str:
    try:
        return version("tuner")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without install
        return "0"


def _add_error_handlers(app: FastAPI) -> None:
    def spec_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SpecError)
        where = exc.source if exc.source in ("query", "path") else "body"
        return JSONResponse({"detail": problem_items(exc.problems, where=where)},
                            status_code=422)

    def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own checks (path and query parameters) in our shape: `msg` is one line
        # naming the parameter and the value it got, like the spec's.
        assert isinstance(exc, RequestValidationError)
        items = []
        for error in exc.errors():
            loc = list(error.get("loc", ()))
            name = ".".join(str(part) for part in loc[1:]) or str(loc[0] if loc else "request")
            msg = str(error.get("msg", ""))
            msg = msg[:1].lower() + msg[1:]
            if error.get("type") == "missing":
                line = f"{name}: required field is missing"
            elif "input" in error and not isinstance(error["input"], dict | list):
                line = f"{name}: got {_clip(error['input'])!r}; {msg}"
            else:
                line = f"{name}: {msg}"
            items.append({"loc": loc, "msg": line, "type": error.get("type", "value_error")})
        return JSONResponse({"detail": items}, status_code=422)

    def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def conflict(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # A TunerError that is none of the above comes from the database (lost server,
        # lock timeout): the request may succeed later.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(SpecError, spec_error)
    app.add_exception_handler(JobNotFoundError, not_found)
    app.add_exception_handler(JobStateError, conflict)
    app.add_exception_handler(TunerError, unavailable)


def _list_valid_names(job_schema: dict[str, Any]) -> None:
    """Name what the API accepts in the job document's schema: the tasks (built-in and
    installed) and the optimizers (the search spaces) as enums, the metrics as examples. The
    lists are those of this server when the document is first asked for."""
    props = job_schema.get("properties", {})
    tasks = available_tasks()
    if "task" in props:
        props["task"]["enum"] = [info.name for info in tasks]
        props["task"]["description"] = "A built-in or installed task (GET /v1/tasks)."
    items = props.get("optimizers", {}).get("items")
    if isinstance(items, dict):
        items["enum"] = search_spaces.available()
        props["optimizers"]["description"] = "Search spaces to compare (GET /v1/search-spaces)."
    if "metric" in props:
        metrics = sorted({m for info in tasks for m in reported_metrics(info.metrics)})
        props["metric"]["examples"] = metrics
        props["metric"]["description"] = "A metric the task reports (GET /v1/tasks)."


def _clip(value: Any, limit: int = 80) -> Any:
    """A value as an error message quotes it: long text cut to ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the job document's schema (the body of ``POST /v1/jobs``)."""
    if app.openapi_schema:
        return app.openapi_schema

    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary,
        description=app.description, routes=app.routes,
    )
    job_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    _list_valid_names(job_schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(job_schema.pop("$defs", {}))
    components["JobSpec"] = job_schema
    app.openapi_schema = schema
    return schema
