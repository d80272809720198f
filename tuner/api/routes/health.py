"""``/healthz``: the process answers and its jobs database does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from tuner.api.deps import SessionDep
from tuner.api.schemas import ErrorOut, Health

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health,
            responses={503: {"model": ErrorOut, "description": "The jobs database is down."}})
def healthz(request: Request, session: SessionDep) -> dict[str, Any]:
    """Liveness and readiness for load balancers and compose health checks: 200 when the
    jobs database answers (503 with the reason otherwise), with the coordinator's state.
    """
    from importlib.metadata import version

    session.execute(text("SELECT 1"))
    service = getattr(request.app.state, "service", None)
    return {
        "status": "ok",
        "version": version("tuner"),
        "coordinator": service.describe() if service is not None else None,
    }
