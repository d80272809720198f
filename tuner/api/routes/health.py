"""``/healthz``: the process answers, its jobs database does, and its coordinator works."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text

from tuner import store
from tuner.api.deps import SettingsDep
from tuner.api.schemas import Health
from tuner.errors import TunerError

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health,
            responses={503: {"model": Health,
                             "description": "The service cannot work now; `problems` says why."}})
def healthz(request: Request, response: Response, settings: SettingsDep) -> dict[str, Any]:
    """Liveness and readiness for load balancers and compose health checks: 200 when the jobs
    database answers and the coordinator loop of ``tuner serve`` works (Ray up, the loop
    coming round); 503 otherwise, with every reason in ``problems``.
    """
    problems: list[str] = []
    try:
        with store.session_scope(settings.database_url) as session:
            session.execute(text("SELECT 1"))
    except TunerError as e:
        problems.append(str(e))
    service = getattr(request.app.state, "service", None)
    coordinator = service.describe() if service is not None else None
    if coordinator is not None:
        problems += [p for p in coordinator["problems"] if p not in problems]
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {
        "status": "unavailable" if problems else "ok",
        "version": version("tuner"),
        "problems": problems,
        "coordinator": coordinator,
    }
