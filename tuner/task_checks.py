"""Which tasks a server accepts in a job: what the API and the CLI check before a job is
stored. The faces import this module, never the engine; nothing here imports a task."""

from __future__ import annotations

from tuner.errors import TaskError
from tuner.task import is_module_path, task_target

__all__ = ["MODULE_PATH_MESSAGE", "service_task_problem"]

MODULE_PATH_MESSAGE = (
    "task: module paths are not accepted by the API; use a built-in or installed task "
    "(see GET /v1/tasks)"
)


def service_task_problem(task: str, *, with_code: bool = False) -> str | None:
    """Why the service refuses ``task``, or ``None``: built-in and installed tasks, and a
    ``package.module:factory`` path only in a job that ships its code (``with_code``).

    Without code, a module path is refused: a server must not run code a client names.
    Nothing is imported here, with or without code (the workers import the shipped code).
    """
    if with_code and is_module_path(task):
        return None
    try:
        task_target(task, allow_module_path=False)
    except TaskError as e:
        return MODULE_PATH_MESSAGE if is_module_path(task) else f"task: {e}"
    return None
