"""Configuration, twelve-factor: environment variables with embedded defaults.

| variable              | default                          | at scale                     |
|-----------------------|----------------------------------|------------------------------|
| ``TUNER_DB_URL``        | ``sqlite:///.tuner/tuner.db``      | ``postgresql+psycopg://...`` |
| ``MLFLOW_TRACKING_URI`` | ``sqlite:///.tuner/mlflow.db``     | ``http://mlflow:5000``       |
| ``RAY_ADDRESS``         | unset: a local Ray is started    | ``head:6379``, ``auto``        |
| ``TUNER_API_TOKEN``     | unset                            | a secret                     |
| ``TUNER_MAX_JOBS``      | 2: jobs ``tuner serve`` runs at once                          |
| ``TUNER_DEBUG``         | unset: one-line errors; ``1`` shows tracebacks                |
| ``TUNER_URL``           | unset: the local store (``--server``) | ``http://host:8000``  |
| ``TUNER_MAX_CODE_MB``   | 50: the largest code archive ``tuner submit --code`` may send      |
| ``TUNER_DB_RETRY_S``    | 60: seconds a database outage is ridden out (retries, backoff) |
| ``TUNER_MLFLOW_RETRY_S`` | 60: seconds an MLflow outage is ridden out (retries, backoff) |
| ``TUNER_ALLOWED_ORIGINS`` | unset: web pages of other origins may not write | ``https://ui.x`` |
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tuner.errors import TunerError

__all__ = ["Settings", "get_settings"]

_ORIGIN = re.compile(r"^https?://[^/\s]+/?$")


class Settings(BaseSettings):
    """Where tuner keeps its state. Read anew by :func:`get_settings` on every call."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    home: Path = Field(
        default=Path(".tuner"), validation_alias=AliasChoices("TUNER_HOME"),
        description="Folder of the embedded stores (SQLite files, MLflow artifacts, exports).",
    )
    db_url: str | None = Field(default=None, validation_alias=AliasChoices("TUNER_DB_URL"))
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI")
    )
    ray_address: str | None = Field(default=None, validation_alias=AliasChoices("RAY_ADDRESS"))
    api_token: str | None = Field(default=None, validation_alias=AliasChoices("TUNER_API_TOKEN"))
    max_jobs: int = Field(
        default=2, ge=1, validation_alias=AliasChoices("TUNER_MAX_JOBS"),
        description="How many jobs `tuner serve` runs at once.",
    )
    debug: bool = Field(
        default=False, validation_alias=AliasChoices("TUNER_DEBUG"),
        description="Show tracebacks instead of one-line errors (the CLI's --debug).",
    )
    max_code_mb: float = Field(
        default=50, gt=0, le=500, validation_alias=AliasChoices("TUNER_MAX_CODE_MB"),
        description="The largest code archive a job may ship, in MiB (Ray's own limit is "
        "500 MiB); unpacked, it may be ten times larger.",
    )
    db_retry_s: float = Field(
        default=60.0, ge=0, le=86_400, validation_alias=AliasChoices("TUNER_DB_RETRY_S"),
        description="Seconds work on the jobs database is retried, with backoff, while the "
        "database is unreachable; a longer outage fails the job.",
    )
    mlflow_retry_s: float = Field(
        default=60.0, ge=0, le=86_400, validation_alias=AliasChoices("TUNER_MLFLOW_RETRY_S"),
        description="Seconds an MLflow call is retried, with backoff, while the tracking "
        "server cannot be reached; a longer outage fails the job (at its very end, after "
        "its results are stored, it only leaves MLflow's copy incomplete).",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("TUNER_ALLOWED_ORIGINS"),
        description="Web origins (scheme://host[:port], comma-separated) whose pages may "
        "write to the API (CORS); a write from any other Origin is refused with 403.",
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, list):
            problems = [o for o in value if not isinstance(o, str) or not _ORIGIN.match(o)]
            if problems:
                raise ValueError(
                    f"TUNER_ALLOWED_ORIGINS: got {problems[0]!r}; allowed: origins such as "
                    "https://ui.example or http://localhost:3000, comma-separated (no path)"
                )
            return [o.rstrip("/").lower() for o in value]
        return value

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the jobs table and the Optuna studies."""
        return self.db_url or f"sqlite:///{self.home / 'tuner.db'}"

    @property
    def max_code_bytes(self) -> int:
        """``TUNER_MAX_CODE_MB`` in bytes."""
        return int(self.max_code_mb * 1024 * 1024)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        """Artifact location of new experiments; ``None`` lets a tracking server decide."""
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return (self.home / "artifacts").resolve().as_uri()

    def ensure_home(self) -> None:
        """Create the folder of the embedded SQLite stores when they are used."""
        if self.database_url.startswith("sqlite") or self.tracking_uri.startswith("sqlite"):
            self.home.mkdir(parents=True, exist_ok=True)


def get_settings() -> Settings:
    """The settings of the environment now.

    Raises:
        TunerError: a variable has a value it cannot take, naming it and what is allowed.
    """
    try:
        return Settings()
    except ValidationError as e:
        problems = []
        for error in e.errors():
            name = str(error["loc"][0]) if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            if message.startswith(f"{name}: "):  # a validator's complete line
                problems.append(message)
            else:
                problems.append(f"{name}: got {error.get('input')!r}; {message}")
        raise TunerError("; ".join(problems)) from None
