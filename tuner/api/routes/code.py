"""``/v1/code``: upload the code a job ships (step one of two), look an upload up.

A job with its own code is submitted in two steps, so that the job body stays JSON::

    curl -X POST $TUNER_URL/v1/code -H "Authorization: Bearer $TUNER_API_TOKEN" \\
         -H 'Content-Type: application/zip' --data-binary @code.zip
    # 201 {"sha256": "9f2c...", "size": 4182, "created_at": "..."}  (200 when already stored)
    curl -X POST $TUNER_URL/v1/jobs -H "Authorization: Bearer $TUNER_API_TOKEN" \\
         -H 'Content-Type: application/json' \\
         -d '{"task": "mymodel.tasks:build", "code": "9f2c...", "optimizers": ["adam"]}'

The archive is checked (:func:`tuner.code.check_archive`: size, a valid zip, no absolute
paths, no ``..``, no symlinks, unpacked size) and stored in the jobs database by its SHA-256.
The body limit is ``TUNER_MAX_CODE_MB`` (default 50 MiB), not the 1 MiB of a job document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from tuner import store
from tuner.api.deps import SessionDep, WriterDep, media_type, read_body
from tuner.api.schemas import ErrorOut
from tuner.code import check_archive
from tuner.errors import CodeError

__all__ = ["ZIP_TYPES", "code_problem", "router"]

router = APIRouter(prefix="/v1/code", tags=["code"])

#: The Content-Types a code archive may be sent with.
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def code_problem(code: str, stored: Callable[[str], bool]) -> str | None:
    """Why a job's ``code`` is refused: a well-formed hash the store does not have (a
    malformed one is the spec's to report); ``None`` when it is stored."""
    if not _SHA256.match(code) or stored(code):
        return None
    return (f"code: no code archive {code} on this server; upload it first with "
            "POST /v1/code (tuner submit --code DIR does both)")


async def code_body(request: Request) -> bytes:
    """The archive in the body: a zip Content-Type (415 otherwise), at most
    ``TUNER_MAX_CODE_MB`` (413 beyond it, before reading more than that)."""
    settings = request.app.state.settings
    limit: int = settings.max_code_bytes
    media = media_type(request)
    if media not in ZIP_TYPES:
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"code: got Content-Type {media or 'none'!r}; send the zip archive as "
                   "application/zip",
        )
    too_large = HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"code: the archive is larger than this server's limit of "
               f"{settings.max_code_mb:g} MiB (TUNER_MAX_CODE_MB); leave data sets out of "
               "the code folder",
    )
    return await read_body(request, limit, too_large)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "This archive is stored already (same SHA-256)."},
        401: {"model": ErrorOut, "description": "Missing or wrong bearer token."},
        413: {"model": ErrorOut, "description": "Over TUNER_MAX_CODE_MB (packed or unpacked)."},
        415: {"model": ErrorOut, "description": "The body is not sent as application/zip."},
        422: {"model": ErrorOut, "description": "Not a zip, or an unsafe entry (absolute "
              "path, '..', symlink)."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The code folder as a zip archive; paths are relative to the "
                           "folder, which becomes the workers' working directory.",
            "content": {"application/zip": {"schema": {"type": "string",
                                                        "format": "binary"}}},
        }
    },
)
def upload_code(
    _writer: WriterDep,
    request: Request,
    session: SessionDep,
    data: Annotated[bytes, Depends(code_body)],
    response: Response,
) -> dict[str, Any]:
    """Store a code archive for jobs to ship (``code`` in the job): 201 with its
    ``sha256`` and ``size``, or 200 when the same archive is stored already. Needs the
    bearer token.
    """
    try:
        sha256 = check_archive(data, max_bytes=request.app.state.settings.max_code_bytes)
    except CodeError as e:
        code = (status.HTTP_413_CONTENT_TOO_LARGE if e.too_large
                else status.HTTP_422_UNPROCESSABLE_CONTENT)
        raise HTTPException(status_code=code, detail=str(e)) from None
    archive, created = store.put_code(session, sha256=sha256, data=data)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/code/{sha256}"
    return archive.to_dict()


@router.get(
    "/{sha256}",
    responses={404: {"model": ErrorOut, "description": "No archive with this SHA-256."}},
)
def get_code(sha256: str, session: SessionDep) -> dict[str, Any]:
    """An uploaded archive's ``sha256``, ``size`` and ``created_at`` (not its bytes)."""
    archive = store.get_code(session, sha256) if _SHA256.match(sha256) else None
    if archive is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND,
                            detail=f"no code archive {sha256} on this server")
    return archive.to_dict()
