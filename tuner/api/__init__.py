"""The REST API (FastAPI) of ``tuner serve``: jobs, trials, exports, search spaces, tasks.

Layout (the FastAPI full-stack template's)::

    app.py        create_app(settings): routers, error handlers, the OpenAPI document
    deps.py       typed dependencies: SettingsDep, SessionDep, WriterDep (the bearer token)
    schemas.py    the shapes of responses (the request body is tuner.spec.JobSpec)
    routes/       one thin module per resource: jobs, catalog (search spaces, tasks), health

The API never touches Ray: it writes jobs to the jobs table and reads Optuna's studies; the
coordinator loop of :mod:`tuner.engine.service` runs them.

Example:
    >>> from tuner.api import create_app
    >>> app = create_app()            # settings from the environment (TUNER_DB_URL, ...)
"""

from __future__ import annotations

from tuner.api.app import MAX_BODY_BYTES, create_app

__all__ = ["MAX_BODY_BYTES", "create_app"]
