"""The jobs store against SQLite and PostgreSQL: migrations next to Optuna's, the job life."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import empty_jobs_tables, new_database
from tuner import store
from tuner.errors import JobNotFoundError, JobStateError, TunerError
from tuner.store._models import include_name, include_object

pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", "postgresql"]
ROOT = Path(__file__).resolve().parents[2]
SPEC = {"name": "digits", "task": "digits-mlp", "optimizers": ["adam", "sgd"], "trials": 4}
#: The newest migration of the tuner_* tables.
HEAD = "0002"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An upgraded jobs database with empty ``tuner_*`` tables (PostgreSQL's is shared)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'tuner.db'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("pg_url")
    empty_jobs_tables(url)
    return url


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, never upgraded: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        (tmp_path / "fresh").mkdir()  # Optuna, which may come first, does not create it
        yield f"sqlite:///{tmp_path / 'fresh' / 'tuner.db'}"
        return
    with new_database(request.getfixturevalue("pg_url")) as url:
        try:
            yield url
        finally:
            store.get_engine(url).dispose()


def _tables(url: str) -> set[str]:
    return set(sa.inspect(store.get_engine(url)).get_table_names())


def _versions(url: str, table: str) -> list[str]:
    with store.get_engine(url).connect() as conn:
        return list(conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars())


def _rerun_upgrade(url: str) -> None:
    """Run the migrations again as a new process would (the per-process cache forgotten)."""
    from tuner.store import _engine

    _engine._upgraded.discard(url)
    store.upgrade(url)


def _schema_diff(url: str) -> list[object]:
    """What autogenerate would change: nothing, if the migrations match the models."""
    with store.get_engine(url).connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": include_name,
                "include_object": include_object,
                "compare_type": True,
                "version_table": "tuner_alembic_version",
            },
        )
        return list(compare_metadata(context, store.Base.metadata))


# -- migrations --------------------------------------------------------------------------


def test_upgrade_creates_our_tables_and_is_idempotent(fresh_url: str) -> None:
    store.upgrade(fresh_url)
    assert {"tuner_jobs", "tuner_job_events", "tuner_code",
            "tuner_alembic_version"} <= _tables(fresh_url)
    assert "alembic_version" not in _tables(fresh_url)
    assert _versions(fresh_url, "tuner_alembic_version") == [HEAD]
    with store.session_scope(fresh_url) as session:
        job_id = store.create_job(session, name="kept", task="t", spec=SPEC).id

    store.upgrade(fresh_url)  # cached: nothing to do
    _rerun_upgrade(fresh_url)  # at head already: nothing to do either

    assert _versions(fresh_url, "tuner_alembic_version") == [HEAD]
    with store.session_scope(fresh_url) as session:
        assert store.get_job(session, job_id).name == "kept"
    assert _schema_diff(fresh_url) == []


def test_upgrade_next_to_optuna_leaves_its_version_table_alone(fresh_url: str) -> None:
    optuna_storage = optuna.storages.RDBStorage(fresh_url)
    optuna_tables = _tables(fresh_url)
    optuna_versions = _versions(fresh_url, "alembic_version")
    assert "studies" in optuna_tables and optuna_versions

    store.upgrade(fresh_url)
    _rerun_upgrade(fresh_url)

    assert _tables(fresh_url) == optuna_tables | {
        "tuner_jobs", "tuner_job_events", "tuner_code", "tuner_alembic_version"
    }
    assert _versions(fresh_url, "alembic_version") == optuna_versions
    assert _versions(fresh_url, "tuner_alembic_version") == [HEAD]
    # Autogenerate ignores Optuna's tables: it would otherwise offer to drop them.
    assert _schema_diff(fresh_url) == []
    study = optuna.create_study(study_name="job-1-adam", storage=optuna_storage)
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1.0, log=True), n_trials=2)
    assert len(study.trials) == 2


def test_optuna_still_works_after_our_upgrade(fresh_url: str) -> None:
    store.upgrade(fresh_url)
    with store.session_scope(fresh_url) as session:
        job = store.create_job(session, name="digits", task="digits-mlp", spec=SPEC)

    storage = optuna.storages.RDBStorage(fresh_url)
    study = optuna.create_study(study_name=f"job-{job.id}-adam", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1.0, log=True), n_trials=3)

    reloaded = optuna.load_study(study_name=f"job-{job.id}-adam", storage=fresh_url)
    assert len(reloaded.trials) == 3
    assert _versions(fresh_url, "tuner_alembic_version") == [HEAD]
    assert _versions(fresh_url, "alembic_version")  # Optuna's own, next to ours
    with store.session_scope(fresh_url) as session:
        assert store.count_jobs(session) == 1


def test_the_alembic_command_finds_no_pending_change(fresh_url: str) -> None:
    optuna.storages.RDBStorage(fresh_url)  # Optuna's tables must not count as changes
    store.upgrade(fresh_url)
    env = {**os.environ, "TUNER_DB_URL": fresh_url}
    ini = str(ROOT / "tuner" / "migrations" / "alembic.ini")
    alembic = [sys.executable, "-m", "alembic", "-c", ini]
    current = subprocess.run(
        [*alembic, "current"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert current.returncode == 0, current.stderr
    assert f"{HEAD} (head)" in current.stdout
    check = subprocess.run(
        [*alembic, "check"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr


def test_ids_start_at_1_in_a_fresh_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'not' / 'yet' / 'there' / 'tuner.db'}"
    store.upgrade(url)
    with store.session_scope(url) as session:
        first = store.create_job(session, name="a", task="t", spec=SPEC)
        second = store.create_job(session, name="b", task="t", spec=SPEC)
    assert (first.id, second.id) == (1, 2)
    with store.get_engine(url).connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1


def test_an_unreachable_database_is_one_clear_line_without_the_password() -> None:
    url = "postgresql+psycopg://tuner:s3cret@127.0.0.1:1/jobs"
    with pytest.raises(TunerError) as raised:
        store.upgrade(url)
    message = str(raised.value)
    assert message.startswith(
        "cannot connect to the jobs database postgresql+psycopg://tuner:***@127.0.0.1:1/jobs: "
    )
    assert "s3cret" not in message and "\n" not in message
    with pytest.raises(TunerError, match="^cannot connect to the jobs database"):
        with store.session_scope(url) as session:
            store.count_jobs(session)


# -- the life of a job -------------------------------------------------------------------


def test_lifecycle_queued_running_succeeded(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        job = store.create_job(session, name="digits", task="digits-mlp", spec=SPEC, origin="api")
    assert job.state == store.JobState.QUEUED
    assert job.created_at.tzinfo is not None and job.created_at.utcoffset() == timedelta(0)
    assert (job.started_at, job.finished_at, job.attempts, job.cancel_requested) == (
        None, None, 0, False
    )

    with store.session_scope(db_url) as session:
        job = store.get_job(session, job.id)
        store.set_state(session, job, store.JobState.RUNNING, message="coordinator started")
    assert job.state == "running" and job.attempts == 1
    assert job.started_at is not None and job.started_at >= job.created_at

    progress = {"adam": {"trials": 4, "complete": 3, "pruned": 1, "failed": 0,
                         "diverged": 0, "running": 0, "best": 0.12}}
    result = {"export": {"job": job.id, "best": "adam"}, "leaderboard": [["adam", 0.12]]}
    with store.session_scope(db_url) as session:
        store.update_progress(session, job.id, progress)
        store.set_mlflow(session, job.id, experiment_id="3", run_id="abc123")
        store.set_result(session, job.id, result)
        store.set_state(session, store.get_job(session, job.id), "succeeded")

    with store.session_scope(db_url) as session:
        job = store.get_job(session, job.id)
        events = store.job_events(session, job.id)
    assert job.state == "succeeded"
    assert job.started_at is not None
    assert job.finished_at is not None and job.finished_at >= job.started_at
    assert job.finished_at.tzinfo == UTC and job.heartbeat_at is not None
    assert job.spec == SPEC and job.progress == progress and job.result == result
    assert [e.state for e in events] == ["queued", "running", "succeeded"]
    assert [e.message for e in events] == ["created (api)", "coordinator started", None]
    assert events[-1].at == job.finished_at
    summary = job.to_dict()
    assert summary == {
        "id": job.id, "name": "digits", "task": "digits-mlp", "state": "succeeded",
        "created_at": job.created_at.isoformat(), "started_at": job.started_at.isoformat(),
        "finished_at": job.finished_at.isoformat(), "error": None, "progress": progress,
        "mlflow_experiment_id": "3", "mlflow_run_id": "abc123", "origin": "api",
        "cancel_requested": False,
    }
    assert summary["created_at"].endswith("+00:00")


def test_a_failure_keeps_its_error(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        job = store.create_job(session, name="x", task="t", spec=SPEC, state="running")
        store.set_state(session, job, "failed", error="task 'nosuch' not found")
    with store.session_scope(db_url) as session:
        job = store.get_job(session, job.id)
        events = store.job_events(session, job.id)
    assert (job.state, job.error) == ("failed", "task 'nosuch' not found")
    assert job.started_at is not None and job.finished_at is not None
    assert [(e.state, e.message) for e in events] == [
        ("running", "created (cli)"), ("failed", "task 'nosuch' not found")
    ]
    assert job.progress is None and job.result is None  # SQL NULL, not JSON null


def test_an_illegal_transition_names_both_states(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        job = store.create_job(session, name="x", task="t", spec=SPEC, state="running")
        store.set_state(session, job, "succeeded")
        with pytest.raises(JobStateError) as raised:
            store.set_state(session, job, "running")
    assert str(raised.value) == f"job {job.id} is succeeded; cannot move to running"
    with store.session_scope(db_url) as session:
        job = store.get_job(session, job.id)
        assert job.state == "succeeded"
        assert [e.state for e in store.job_events(session, job.id)] == ["running", "succeeded"]


def test_a_stale_job_object_cannot_overwrite_a_newer_state(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        stale = store.create_job(session, name="x", task="t", spec=SPEC)
    with store.session_scope(db_url) as session:
        store.request_cancel(session, stale.id)  # another process cancels it
    with store.session_scope(db_url) as session:
        session.add(stale)
        with pytest.raises(JobStateError, match=rf"^job {stale.id} is cancelled; cannot move"):
            store.set_state(session, stale, "running")


def test_an_unknown_job_names_its_id_and_the_command(db_url: str) -> None:
    expected = "no job 7 in this store (see tuner jobs)"
    with store.session_scope(db_url) as session:
        for call in (
            lambda: store.get_job(session, 7),
            lambda: store.job_events(session, 7),
            lambda: store.update_progress(session, 7, {}),
            lambda: store.set_result(session, 7, {}),
            lambda: store.set_mlflow(session, 7, experiment_id="1", run_id="r"),
            lambda: store.request_cancel(session, 7),
        ):
            with pytest.raises(JobNotFoundError) as raised:
                call()
            assert str(raised.value) == expected


def test_list_is_newest_first_with_pages_counts_and_state_filter(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        assert store.latest_job(session) is None
        ids = [store.create_job(session, name=f"j{i}", task="t", spec=SPEC).id for i in range(7)]
        store.set_state(session, store.get_job(session, ids[2]), "running")
        store.set_state(session, store.get_job(session, ids[4]), "cancelled")

    with store.session_scope(db_url) as session:
        assert [j.id for j in store.list_jobs(session)] == ids[::-1]
        assert [j.id for j in store.list_jobs(session, limit=3)] == ids[::-1][:3]
        assert [j.id for j in store.list_jobs(session, limit=3, offset=3)] == ids[::-1][3:6]
        assert [j.id for j in store.list_jobs(session, limit=3, offset=6)] == [ids[0]]
        assert store.list_jobs(session, offset=7) == []
        queued = [ids[6], ids[5], ids[3], ids[1], ids[0]]
        assert [j.id for j in store.list_jobs(session, state="queued")] == queued
        assert [j.id for j in store.list_jobs(session, state=store.JobState.RUNNING)] == [ids[2]]
        assert store.count_jobs(session) == 7
        assert store.count_jobs(session, state="queued") == 5
        assert store.count_jobs(session, state="succeeded") == 0
        latest = store.latest_job(session)
        assert latest is not None and latest.id == ids[-1]
        with pytest.raises(ValueError, match="^unknown job state 'done'; allowed: queued, "):
            store.count_jobs(session, state="done")


def test_cancel_a_queued_job_at_once_and_flag_a_running_one(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        queued = store.create_job(session, name="q", task="t", spec=SPEC)
        running = store.create_job(session, name="r", task="t", spec=SPEC, state="running")
    with store.session_scope(db_url) as session:
        assert store.request_cancel(session, queued.id).state == "cancelled"
        flagged = store.request_cancel(session, running.id)
        assert (flagged.state, flagged.cancel_requested) == ("running", True)
        store.request_cancel(session, running.id)  # twice is harmless
    with store.session_scope(db_url) as session:
        queued = store.get_job(session, queued.id)
        assert queued.finished_at is not None and queued.cancel_requested
        assert [e.state for e in store.job_events(session, running.id)] == ["running", "running"]
        store.set_state(session, store.get_job(session, running.id), "cancelled")
        with pytest.raises(JobStateError) as raised:
            store.request_cancel(session, running.id)
    assert str(raised.value) == (
        f"job {running.id} is cancelled; only a queued or running job can be cancelled"
    )


def test_claim_takes_the_oldest_queued_job_once(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        assert store.claim_next_queued(session) is None
        ids = [store.create_job(session, name=f"j{i}", task="t", spec=SPEC).id for i in range(3)]
        store.request_cancel(session, ids[0])

    claimed = []
    for _ in range(3):
        with store.session_scope(db_url) as session:
            job = store.claim_next_queued(session)
            claimed.append(None if job is None else (job.id, job.state, job.attempts))
    assert claimed == [(ids[1], "running", 1), (ids[2], "running", 1), None]
    with store.session_scope(db_url) as session:
        job = store.get_job(session, ids[1])
        assert job.started_at is not None and job.heartbeat_at is not None
        events = store.job_events(session, ids[1])
        assert [(e.state, e.message) for e in events] == [
            ("queued", "created (cli)"), ("running", "claimed")
        ]


def test_concurrent_claimers_never_share_a_job(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        ids = [store.create_job(session, name=f"j{i}", task="t", spec=SPEC).id for i in range(12)]
    claimed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer() -> None:
        try:
            start.wait()
            while True:
                with store.session_scope(db_url) as session:
                    job = store.claim_next_queued(session)
                    if job is None:
                        return
                    claimed.append(job.id)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(claimed) == ids  # each job exactly once
    with store.session_scope(db_url) as session:
        assert store.count_jobs(session, state="running") == 12
        assert {j.attempts for j in store.list_jobs(session)} == {1}


def test_claim_a_given_job_only_while_it_is_queued(db_url: str) -> None:
    with store.session_scope(db_url) as session:
        first = store.create_job(session, name="a", task="digits-mlp", spec={})
        second = store.create_job(session, name="b", task="digits-mlp", spec={})
        session.flush()
        ids = (first.id, second.id)
    with store.session_scope(db_url) as session:
        job = store.claim_next_queued(session, job_id=ids[1])  # not the oldest: the one asked
        assert job is not None and job.id == ids[1] and job.state == "running"
    with store.session_scope(db_url) as session:
        assert store.claim_next_queued(session, job_id=ids[1]) is None  # claimed already
        store.request_cancel(session, ids[0])
    with store.session_scope(db_url) as session:
        assert store.claim_next_queued(session, job_id=ids[0]) is None  # cancelled meanwhile
