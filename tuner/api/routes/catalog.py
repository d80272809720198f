"""``/v1/search-spaces`` and ``/v1/tasks``: what can be tuned, on what."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

import search_spaces
from tuner.api.schemas import SearchSpaceOut, TaskOut
from tuner.task import available_tasks

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/search-spaces", response_model=list[SearchSpaceOut])
def list_search_spaces() -> list[dict[str, Any]]:
    """The shipped search spaces (one per optimizer name a job may list), with each
    parameter's distribution. ``space_overrides`` in a job narrow or fix them.
    """
    out = []
    for name in search_spaces.available():
        space = search_spaces.load(name)
        out.append({
            "name": name,
            "torch_class": space.optimizer,
            "description": space.description,
            "fixed": dict(space.fixed),
            "params": {key: spec.describe() for key, spec in space.params.items()},
        })
    return out


@router.get("/tasks", response_model=list[TaskOut])
def list_tasks() -> list[dict[str, Any]]:
    """The tasks the API accepts: built-in ones and those installed through the
    ``tuner.tasks`` entry points. A job's ``metric`` must be one of a task's ``metrics``.
    """
    return [
        {
            "name": info.name,
            "kind": info.kind,
            "description": info.description,
            "metrics": info.reports,
        }
        for info in available_tasks()
    ]
