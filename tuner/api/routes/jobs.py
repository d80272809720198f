"""``/v1/jobs``: submit, list, inspect, cancel; a job's trials and its export."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status

from tuner import store
from tuner.analysis.export import render_export
from tuner.api.deps import OptunaStorageDep, SessionDep, WriterDep, media_type, read_body
from tuner.api.routes.code import code_problem
from tuner.api.schemas import (
    ErrorOut,
    JobDetail,
    JobPage,
    TrialOut,
    TrialPage,
    ValidationErrorOut,
)
from tuner.errors import SpecError
from tuner.results import jsonable
from tuner.spec import MAX_DEPTH, JobSpec, document_problems, parse_job, study_name
from tuner.store._jobs import MAX_JOB_ID as _MAX_JOB_ID
from tuner.task_checks import service_task_problem
from tuner.views import job_detail, job_page, succeeded_result

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]

#: Job ids are PostgreSQL ``integer``s (SQLite's are wider): a larger id is refused with
#: a 422 naming ``job_id``, never sent to the database.
MAX_JOB_ID = _MAX_JOB_ID
#: Offsets beyond this are refused (SQLite and PostgreSQL overflow on 2**63).
MAX_OFFSET = 2**31 - 1

JobId = Annotated[int, Path(ge=1, le=MAX_JOB_ID, description="The job's id.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]

_Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: _Responses = {
    404: {"model": ErrorOut, "description": "No job with this id in this store."}}
_UNAUTHORIZED: _Responses = {
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token."}}


# -- the request body -----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (use null, or a finite number)")


async def job_document(request: Request) -> Any:
    """The JSON body, read up to the app's size limit (413 beyond it); 415 unless it says
    ``Content-Type: application/json`` (the types a browser sends cross-site without asking
    are never accepted)."""
    media = media_type(request)
    if media != "application/json":
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type: got {media or 'none'!r}; allowed: application/json",
        )
    limit: int = request.app.state.max_body_bytes
    too_large = HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"request body too large; the limit is {limit} bytes",
    )
    body = await read_body(request, limit, too_large)
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise SpecError([f"nested deeper than {MAX_DEPTH} levels; a job is a few levels "
                         "deep"], source="body") from None
    except ValueError as e:
        raise SpecError([f"not valid JSON: {e}"], source="body") from None
    problems = document_problems(document)
    if problems:
        raise SpecError(problems, source="body")
    return document


def parse_api_job(document: Any, *,
                  code_stored: Callable[[str], bool] | None = None) -> JobSpec:
    """:func:`tuner.spec.parse_job`, plus the API's rule: built-in or installed tasks, or a
    module path in a job that ships its code (``code``, which ``code_stored`` must find).

    A module path (``package.module:factory``) is never imported here: without ``code`` it
    is refused with its own message; with it, only its shape is checked (the workers
    import it from the code).

    Raises:
        SpecError: every bad field at once, with the CLI's texts.
    """
    task = document.get("task") if isinstance(document, dict) else None
    code = document.get("code") if isinstance(document, dict) else None
    task_problem = (service_task_problem(task, with_code=code is not None)
                    if isinstance(task, str) else None)
    code_missing = (code_problem(code, code_stored)
                    if isinstance(code, str) and code_stored is not None else None)
    try:
        spec = parse_job(document, source="body")
    except SpecError as e:
        problems = e.problems
    else:
        if task_problem is None and code_missing is None:
            return spec
        problems = []
    if task_problem is not None:
        problems = [p for p in problems if not p.startswith("task:")] + [task_problem]
    if code_missing is not None:
        problems.append(code_missing)
    raise SpecError(problems, source="body")


# -- routes ---------------------------------------------------------------------------------


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobDetail,
    responses={
        **_UNAUTHORIZED,
        403: {"model": ErrorOut, "description": "A write from a foreign web origin."},
        413: {"model": ErrorOut, "description": "The body is larger than the limit (1 MiB)."},
        415: {"model": ErrorOut, "description": "The body is not application/json."},
        422: {"model": ValidationErrorOut, "description": "Every bad field, with the CLI's text."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The job document (the YAML job file, as JSON).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}},
        }
    },
)
def submit_job(
    _writer: WriterDep,
    request: Request,
    session: SessionDep,
    document: Annotated[Any, Depends(job_document)],
    response: Response,
) -> dict[str, Any]:
    """Submit a job: validated whole (422 names each bad field), stored ``queued``, 201.

    The body is the job file as JSON. The task must be built-in or installed (see
    ``GET /v1/tasks``), or a ``package.module:factory`` path in a job whose ``code`` names
    an archive uploaded with ``POST /v1/code``; the server never imports it (its workers
    do). Without ``code``, a module path is refused.
    Needs ``Authorization: Bearer $TUNER_API_TOKEN``.

    Example::

        curl -X POST http://127.0.0.1:8000/v1/jobs -H "Authorization: Bearer $TUNER_API_TOKEN" \\
             -H 'Content-Type: application/json' \\
             -d '{"task": "digits-mlp", "optimizers": ["sgd", "adam"], "trials": 10}'
    """
    spec = parse_api_job(document,
                         code_stored=lambda sha: store.get_code(session, sha) is not None)
    job = store.create_job(
        session, name=spec.name, task=spec.task, spec=spec.model_dump(mode="json"),
        origin="api",
    )
    events = store.job_events(session, job.id)
    session.commit()
    wake = getattr(request.app.state, "on_submit", None)
    if wake is not None:
        wake()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_detail(job, events)


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET,
                                 description="Jobs to skip, newest first.")] = 0,
    state: Annotated[State | None, Query(description="Only jobs in this state.")] = None,
) -> dict[str, Any]:
    """List jobs, newest first: ``{items, total, limit, offset}``."""
    return job_page(store.list_jobs(session, limit=limit, offset=offset, state=state),
                    total=store.count_jobs(session, state=state), limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobDetail, responses=_NOT_FOUND)
def get_job(job_id: JobId, session: SessionDep) -> dict[str, Any]:
    """A job: state, per-optimizer progress, spec, history, leaderboard once succeeded."""
    job = store.get_job(session, job_id)
    return job_detail(job, store.job_events(session, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    responses={
        **_UNAUTHORIZED, **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job has already finished."},
    },
)
def cancel_job(_writer: WriterDep, job_id: JobId, session: SessionDep) -> dict[str, Any]:
    """Cancel a job. A queued job is ``cancelled`` at once and never runs; a running one gets
    ``cancel_requested`` and its coordinator stops it within seconds (every started trial
    ends in Optuna and MLflow, then the job is ``cancelled``). Asking twice is harmless;
    a finished job answers 409. Needs the bearer token.
    """
    job = store.request_cancel(session, job_id)
    events = store.job_events(session, job_id)
    session.commit()
    return job_detail(job, events)


@router.get("/{job_id}/trials", response_model=TrialPage, responses=_NOT_FOUND)
def list_trials(
    job_id: JobId,
    *,
    session: SessionDep,
    storage: OptunaStorageDep,
    optimizer: Annotated[str | None, Query(max_length=100,
                                           description="Only this optimizer's study.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """A job's trials, read from Optuna's studies ``job-<id>-<optimizer>``: by optimizer (in
    the job's order) then trial number, with state, value, parameters and user attributes.
    A job that has not started has none.
    """
    job = store.get_job(session, job_id)
    names: list[str] = list((job.spec or {}).get("optimizers", []))
    if optimizer is not None:
        if optimizer not in names:
            raise SpecError(
                [f"optimizer: {optimizer!r} is not one of job {job_id}'s optimizers "
                 f"({', '.join(names)})"], source="query",
            )
        names = [optimizer]
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            study_id = storage.get_study_id_from_name(study_name(job_id, name))
        except KeyError:
            continue  # not started yet
        for trial in storage.get_all_trials(study_id, deepcopy=False):
            value = trial.values[0] if trial.values else None
            rows.append({
                "optimizer": name,
                "number": trial.number,
                "state": trial.state.name,
                "value": value if value is None or math.isfinite(value) else None,
                "params": jsonable(trial.params),
                "user_attrs": jsonable(trial.user_attrs),
                "datetime_start": _iso(trial.datetime_start),
                "datetime_complete": _iso(trial.datetime_complete),
            })
    page = [TrialOut.model_validate(row) for row in rows[offset:offset + limit]]
    return {"items": page, "total": len(rows), "limit": limit, "offset": offset}


@router.get(
    "/{job_id}/export",
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job has not succeeded."},
        200: {"content": {"application/yaml": {}, "application/json": {}},
              "description": "The export file."},
    },
)
def export_job(
    job_id: JobId,
    session: SessionDep,
    format: Annotated[Literal["yaml", "json"], Query(description="yaml or json.")] = "yaml",
) -> Response:
    """The best configuration of each optimizer (the export file of docs/design.md), as YAML or
    JSON; ``getattr(torch.optim, cls)(params, **kwargs)`` works on it. 409 until the job
    has succeeded.
    """
    result = succeeded_result(store.get_job(session, job_id),
                              "only a succeeded job has an export")
    media = "application/yaml" if format == "yaml" else "application/json"
    return Response(render_export(result.export, format), media_type=media)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
