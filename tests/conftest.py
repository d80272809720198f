"""Shared fixtures: one Ray cluster, a fresh PostgreSQL database per run, isolated stores.

PostgreSQL tests skip on a laptop without a server, never when ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ray_cluster import RayCluster, start_cluster

# Every `mlflow server` the tests start (and `tuner ui`'s) would start MLflow's job runner:
# five huey consumer processes, each an MLflow import, for features tuner does not use.
os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"

# The token of the test run's Ray cluster, in the environment before anything imports Ray
# (a process reads it once). `tuner run` subprocesses and servers with a local Ray of their
# own inherit it too, which token authentication allows.
RAY_TOKEN = secrets.token_hex(16)
os.environ |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}

PG_ADMIN_URL = os.environ.get(
    "TUNER_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """One Ray cluster for the whole test run (`ray start --head`, token authentication).

    The jobs run in the test process join it (``ray_session``), and so do the `tuner serve`
    subprocesses (``server_env``), so each does not start a Ray of its own. Four logical
    CPUs: a job takes two workers by default, and a server keeps its last job's workers
    between jobs, so two jobs' workers fit side by side.
    """
    cluster = start_cluster(tmp_path_factory.mktemp("ray") / "ray-start.log", num_cpus=4,
                            token=RAY_TOKEN)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_session(ray_cluster: RayCluster) -> Iterator[None]:
    """The test process joined to the run's Ray cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL database created for this test run and dropped after it."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as e:
        admin.dispose()
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"PostgreSQL is required in CI: {e}") from e
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {e}")
    name = f"tuner_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def new_database(url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside the one of ``url`` (named after it), dropped
    at the end (even while it refuses connections); its URL, password included."""
    import sqlalchemy as sa

    base = sa.make_url(url)
    name = f"{base.database}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_jobs_tables(url: str) -> None:
    """Migrate the jobs database at ``url`` and delete every job (and its events)."""
    import sqlalchemy as sa

    from tuner import store

    store.upgrade(url)
    with store.session_scope(url) as session:
        session.execute(sa.delete(store.JobEvent))
        session.execute(sa.delete(store.Job))


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new, empty MLflow SQLite store, made by MLflow once per test run.

    MLflow builds a new store's schema with its migrations, about 3 s each time; a test's
    store is a copy of this one (the same file MLflow would make), so that cost is paid once.
    Tests of `tuner run`, `tuner serve` and `tuner demo` in a home of their own still have
    MLflow make theirs.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    made = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())
    made.engine.dispose()
    return folder / "mlflow.db"


@pytest.fixture
def tuner_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               mlflow_store_template: Path) -> Path:
    """An empty embedded store (SQLite jobs/studies, SQLite MLflow) in a temporary folder."""
    home = tmp_path / "tuner-home"
    home.mkdir()
    shutil.copyfile(mlflow_store_template, home / "mlflow.db")
    monkeypatch.setenv("TUNER_HOME", str(home))
    monkeypatch.delenv("TUNER_DB_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return home
