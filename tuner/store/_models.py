"""The ``tuner_*`` tables: jobs, their state history, and the code archives shipped with them.

We share the database with Optuna's RDBStorage, which owns the unprefixed tables and the
default ``alembic_version`` table; every table here starts with ``tuner_`` and the
migrations in :mod:`tuner.migrations` keep their own version table, ``tuner_alembic_version``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "TABLE_PREFIX",
    "TERMINAL_STATES",
    "Base",
    "CodeArchive",
    "Job",
    "JobEvent",
    "JobState",
    "UTCDateTime",
    "include_name",
    "include_object",
    "utcnow",
]


class JobState(StrEnum):
    """The life of a job: ``queued -> running -> succeeded | failed | cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as
    naive UTC and read back with ``tzinfo=UTC``. A naive value given to it is taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints, so that batch migrations on SQLite can find and alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Every table of ours starts with this; the others (Optuna's) are not ours to migrate.
TABLE_PREFIX = "tuner_"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Reflect only our tables: Optuna's are not ours to diff."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare only our tables (and what belongs to them)."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    table = getattr(obj, "table", None)
    return table is None or table.name.startswith(TABLE_PREFIX)


_STATES_SQL = ", ".join(f"'{s.value}'" for s in JobState)


class Base(DeclarativeBase):
    """Declarative base of the ``tuner_*`` tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class Job(Base):
    """A user's request: one tuning job, from submission to its result."""

    __tablename__ = "tuner_jobs"
    __table_args__ = (
        CheckConstraint(f"state IN ({_STATES_SQL})", name="state"),
        Index("ix_tuner_jobs_state", "state", "id"),
        # Ids are never reused after a delete (SQLite's AUTOINCREMENT; a sequence elsewhere).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(300))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # none_as_null: a Python None is SQL NULL, not the JSON value 'null'.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16), default="cli")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary of the job (no spec, no result).

        Example:
            >>> job.to_dict()["state"]
            'queued'
        """
        return {
            "id": self.id,
            "name": self.name,
            "task": self.task,
            "state": str(self.state),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "progress": self.progress,
            "mlflow_experiment_id": self.mlflow_experiment_id,
            "mlflow_run_id": self.mlflow_run_id,
            "origin": self.origin,
            "cancel_requested": bool(self.cancel_requested),
        }

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, state={self.state!r})"


class JobEvent(Base):
    """One entry of a job's history: a state transition (or a cancel request)."""

    __tablename__ = "tuner_job_events"
    __table_args__ = (Index("ix_tuner_job_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("tuner_jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form of the event."""
        return {"at": _iso(self.at), "state": self.state, "message": self.message}

    def __repr__(self) -> str:
        return f"JobEvent(job_id={self.job_id!r}, state={self.state!r}, at={self.at!r})"


class CodeArchive(Base):
    """A zip of a user's code (``tuner submit --code``), addressed by its SHA-256.

    Kept in the jobs database so that a restarted server, or another server on the same
    database, has it; a job's spec names it in ``code``. The same code sent twice is
    stored once.
    """

    __tablename__ = "tuner_code"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """What the API answers about an archive (never its bytes)."""
        return {"sha256": self.sha256, "size": self.size, "created_at": _iso(self.created_at)}

    def __repr__(self) -> str:
        return f"CodeArchive(sha256={self.sha256[:12]!r}..., size={self.size!r})"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
