"""Typed dependencies of the routes: settings, a database session, the writer check; the
request body read up to a limit.

``SessionDep`` commits when the request's work is done (routes that write commit explicitly
before answering, so a 201 is never sent for a job that is not stored).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from tuner import store
from tuner.config import Settings

__all__ = ["SessionDep", "SettingsDep", "WriterDep", "get_session", "get_settings",
           "is_loopback", "media_type", "read_body", "require_writer"]


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A session on the jobs database for one request (commits at the end)."""
    with store.session_scope(settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (and Starlette's in-process test client)."""
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def media_type(request: Request) -> str:
    """The body's media type, lower case, without its parameters (``""`` when none)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def read_body(request: Request, limit: int, too_large: HTTPException) -> bytes:
    """The request body, at most ``limit`` bytes: ``too_large`` is raised on a larger
    ``Content-Length``, or as soon as the body read grows past it (never reading more)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_writer(request: Request, settings: SettingsDep) -> None:
    """Writes need ``Authorization: Bearer $TUNER_API_TOKEN`` (compared in constant time).

    A server without a token (which ``tuner serve`` binds to loopback only) accepts writes
    from loopback clients only.
    """
    token = settings.api_token
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not token:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise _unauthorized(
                "this server has no TUNER_API_TOKEN and accepts writes from loopback only"
            )
        return
    if scheme.lower() != "bearer" or not credentials:
        raise _unauthorized(
            "writes need the header Authorization: Bearer <token> (the server's "
            "TUNER_API_TOKEN)"
        )
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise _unauthorized("invalid token: it is not the server's TUNER_API_TOKEN")


WriterDep = Annotated[None, Depends(require_writer)]


def get_optuna_storage(request: Request, settings: SettingsDep) -> Any:
    """Optuna's RDBStorage on the jobs database, opened once per app (it is not cheap)."""
    state = request.app.state
    lock = state.storage_lock
    with lock:
        if getattr(state, "optuna_storage", None) is None:
            from tuner.engine.studies import open_storage

            state.optuna_storage = open_storage(settings.database_url)
        return state.optuna_storage


OptunaStorageDep = Annotated[Any, Depends(get_optuna_storage)]
