"""The code archives shipped with jobs (``tuner_code``), by SHA-256.

The bytes are checked before they get here (:func:`tuner.code.check_archive`); these
functions only store and read them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from tuner.store._models import CodeArchive

__all__ = ["code_bytes", "get_code", "put_code"]


def put_code(session: Session, *, sha256: str, data: bytes) -> tuple[CodeArchive, bool]:
    """Store an archive unless it is there already; ``(archive, created)``.

    Committed here, so that two uploads of the same code at once both succeed.
    """
    existing = get_code(session, sha256)
    if existing is not None:
        return existing, False
    archive = CodeArchive(sha256=sha256, size=len(data), data=data)
    session.add(archive)
    try:
        session.commit()
    except IntegrityError:  # the same code stored meanwhile by another request
        session.rollback()
        stored = get_code(session, sha256)
        assert stored is not None
        return stored, False
    return archive, True


def get_code(session: Session, sha256: str) -> CodeArchive | None:
    """The archive's row without loading its bytes, or ``None``."""
    stmt = select(CodeArchive).options(defer(CodeArchive.data)).where(
        CodeArchive.sha256 == sha256)
    return session.scalars(stmt).first()


def code_bytes(session: Session, sha256: str) -> bytes | None:
    """The archive's bytes, or ``None`` when it is not stored."""
    return session.scalar(select(CodeArchive.data).where(CodeArchive.sha256 == sha256))
