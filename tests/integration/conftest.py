"""Fixtures of the tests of `tuner serve` (helpers in :mod:`tests.integration.servers`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import new_database
from tests.integration.servers import Server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts; whatever is left of them is killed at the end."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()
        else:
            server.reap(grace=10)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The jobs and studies database of the servers: a SQLite file in ``tmp_path / "home"``
    (their TUNER_HOME), or a new PostgreSQL database (not the session's shared one: a
    server runs every queued job it finds)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'tuner.db'}"
        return
    request.applymarker(pytest.mark.postgres)
    with new_database(request.getfixturevalue("pg_url")) as url:
        yield url
