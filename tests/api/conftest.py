"""The REST API against a real jobs database: SQLite in a temporary folder, and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import empty_jobs_tables

TOKEN = "s3cret-test-token"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tuner_home: Path,
           monkeypatch: pytest.MonkeyPatch) -> str:
    """The jobs database of the app: a new SQLite file, or the run's PostgreSQL database
    with its jobs deleted."""
    if request.param == "sqlite":
        url = f"sqlite:///{tuner_home / 'tuner.db'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("pg_url")
        empty_jobs_tables(url)
    monkeypatch.setenv("TUNER_DB_URL", url)
    return url


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A client of the app with TUNER_API_TOKEN set; no coordinator (jobs stay queued)."""
    from tuner.api import create_app
    from tuner.config import get_settings

    monkeypatch.setenv("TUNER_API_TOKEN", TOKEN)
    with TestClient(create_app(get_settings())) as test_client:
        yield test_client
