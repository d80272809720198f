"""The CLI's jobs source: the local store and a tuner server answer alike, and every command
prints the same from either; user text (names, tasks, errors) is printed as text.

The server is the real API app (``tuner.api.create_app``) on the same jobs database, reached
through the real :class:`tuner.client.TunerClient` over Starlette's in-process transport.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import tuner.api.routes.jobs
import tuner.api.routes.report
import tuner.cli._local
import tuner.cli._remote
from tests.stored_results import stored_optimizers
from tuner import store, views
from tuner.api import create_app
from tuner.cli import app
from tuner.cli._local import LocalJobs
from tuner.cli._remote import RemoteJobs
from tuner.client import TunerClient
from tuner.config import get_settings
from tuner.results import LeaderboardRow
from tuner.spec import parse_job

URL = "http://127.0.0.1:8000"
SPEC: dict[str, Any] = {
    "name": "a:train:", "task": "mypkg.loop:train", "optimizers": ["sgd", "adam"], "trials": 4,
    "epochs": 2, "metric": "val_accuracy", "mode": "max", "final_seeds": 3}
PROGRESS = {"phase": "done", "optimizers": {
    name: {"budget": 4, "complete": 3, "pruned": 1, "diverged": 0, "failed": 0, "lost": 0,
           "running": 0, "finished": 4, "best": best, "best_trial": 2, "final_total": 3,
           "final_done": 3}
    for name, best in (("sgd", 0.975), ("adam", 0.96))}}
ROWS = [
    {"rank": 1, "optimizer": "sgd", "mean": 0.97389, "std": 0.0054, "ci95": 0.0067, "seeds": 3,
     "finals_failed": 0, "p_vs_leader": None, "tied_with_leader": None, "best": 0.975,
     "trial": 2, "lr": 0.27, "batch_size": 8, "complete": 3, "pruned": 1, "diverged": 0,
     "failed": 0},
    {"rank": 2, "optimizer": "adam", "mean": 0.96, "std": 0.021, "ci95": 0.026, "seeds": 3,
     "finals_failed": 0, "p_vs_leader": 0.21, "tied_with_leader": True, "best": 0.96,
     "trial": 1, "lr": 0.035, "batch_size": 64, "complete": 3, "pruned": 1, "diverged": 0,
     "failed": 0},
]
EXPORT = {"job": 1, "task": "mypkg.loop:train", "best": "sgd",
          "metric": {"name": "val_accuracy", "mode": "max"},
          "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.27}, "batch_size": 8}}}
ERROR = "task 'mypkg.loop:train:' raised ValueError: bad [red]value[/] :train:"
ZERO_WIDTH = "zero\u200bwidth"


@pytest.fixture
def jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A store with a succeeded job named ``a:train:`` on ``mypkg.loop:train``, a queued one
    with a zero-width space in its name, and a failed one whose error quotes user text."""
    monkeypatch.setenv("TUNER_HOME", str(tmp_path))
    for name in ("TUNER_DB_URL", "TUNER_URL", "TUNER_API_TOKEN", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    url = get_settings().database_url
    store.upgrade(url)
    with store.session_scope(url) as session:
        done = store.create_job(session, name=SPEC["name"], task=SPEC["task"], spec=SPEC,
                                state="running")
        store.update_progress(session, done.id, PROGRESS)
        store.set_result(session, done.id, {"leaderboard": ROWS, "seconds": 151.0,
                                            "export": EXPORT})
        store.set_state(session, done, "succeeded")
        queued = store.create_job(session, name=ZERO_WIDTH, task="digits-mlp",
                                  spec={**SPEC, "name": ZERO_WIDTH, "task": "digits-mlp"})
        failed = store.create_job(session, name="[bold]loud[/]", task="digits-mlp",
                                  spec={**SPEC, "name": "[bold]loud[/]"}, state="running")
        store.set_state(session, failed, "failed", error=ERROR)
        also_queued = store.create_job(session, name="second", task="digits-mlp", spec=SPEC)
        return {"done": done.id, "queued": queued.id, "failed": failed.id,
                "also_queued": also_queued.id}


@pytest.fixture
def api(jobs: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The REST API on the same store; ``--server URL`` reaches it in process."""
    served = create_app(get_settings())

    def client(url: str, *, token: str | None = None) -> TunerClient:
        made = TunerClient(url, token=token)
        made.close()
        # The real client's requests, answered by the app in process.
        made._http = TestClient(served, base_url=url, headers=dict(made._http.headers))
        return made

    monkeypatch.setattr(tuner.cli._remote, "TunerClient", client)
    return TestClient(served, base_url=URL)


def tuner_cli(*args: str, columns: int = 250) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def test_the_local_source_answers_what_the_api_answers(jobs: dict[str, int],
                                                       api: TestClient) -> None:
    local, remote = LocalJobs(), RemoteJobs(URL)
    for job_id in jobs.values():
        answered = api.get(f"/v1/jobs/{job_id}")
        assert answered.status_code == 200
        assert local.job(job_id) == answered.json() == remote.job(job_id)
    for state in (None, "queued"):
        params: dict[str, Any] = {"limit": 3} | ({"state": state} if state else {})
        page = api.get("/v1/jobs", params=params).json()
        assert local.jobs(limit=3, state=state) == page == remote.jobs(limit=3, state=state)
    assert local.latest() == remote.latest() == local.job(jobs["also_queued"])
    assert local.export(jobs["done"]) == EXPORT == remote.export(jobs["done"])


def test_the_local_source_builds_the_apis_own_shapes(jobs: dict[str, int]) -> None:
    # The same functions' output, not only the same JSON: the two cannot drift apart.
    # One builder (tuner.views, no FastAPI), used by the API's routes and the local source.
    for module in (tuner.api.routes.jobs, tuner.cli._local):
        assert module.job_detail is views.job_detail, module
        assert module.job_page is views.job_page, module
    for module in (tuner.api.routes.report, tuner.cli._local):
        assert module.report_facts is views.report_facts, module
    api_detail, api_summary = views.job_detail, views.job_summary
    url = get_settings().database_url
    with store.session_scope(url) as session:
        for job_id in jobs.values():
            job = store.get_job(session, job_id)
            expected = json.loads(json.dumps(api_detail(job, store.job_events(session, job_id))))
            assert LocalJobs().job(job_id) == expected
        listed = [api_summary(job) for job in store.list_jobs(session, limit=10)]
    assert LocalJobs().jobs(limit=10)["items"] == listed


def test_a_job_answers_its_leaderboard_as_the_engine_stored_it(jobs: dict[str, int]) -> None:
    # What tuner.engine.jobs stores: each LeaderboardRow.to_dict(), through JSON.
    rows = [LeaderboardRow(optimizer="sgd", best=0.975, mean=0.97389, std=0.0054, ci95=0.0067,
                           seeds=3, trial=2, lr=0.27, batch_size=8, complete=3, pruned=1,
                           finals=(0.97, 0.975, 0.977), target_epoch=2, target_reached="3/3",
                           rank=1),
            LeaderboardRow(optimizer="adam", best=0.96, mean=0.96, std=0.021, ci95=0.026,
                           seeds=2, finals_failed=1, finals_diverged=1, trial=1, lr=0.035,
                           complete=2, diverged=2, finals=(0.94, 0.98), target_epoch=None,
                           target_reached="1/3", rank=2, p_raw=0.21, p_vs_leader=0.21,
                           tied_with_leader=True)]
    stored = json.loads(json.dumps([row.to_dict() for row in rows]))
    url = get_settings().database_url
    with store.session_scope(url) as session:
        job = store.create_job(session, name="board", task="digits-mlp", spec=SPEC,
                               state="running")
        store.set_result(session, job.id, {"leaderboard": stored, "seconds": 12.5,
                                           "export": EXPORT})
        store.set_state(session, job, "succeeded")
        job_id = job.id

    view = LocalJobs().job(job_id)

    assert view["leaderboard"] == stored and view["seconds"] == 12.5
    assert [LeaderboardRow.from_dict(row) for row in view["leaderboard"]] == rows
    assert LocalJobs().job(jobs["queued"])["leaderboard"] is None  # not an empty one


@pytest.mark.parametrize("columns", [80, 250])
def test_every_command_prints_the_same_from_the_store_and_from_a_server(
    jobs: dict[str, int], api: TestClient, columns: int,
) -> None:
    done, queued, failed = jobs["done"], jobs["queued"], jobs["failed"]
    commands = [("jobs",), ("jobs", "--state", "queued"), ("jobs", "--limit", "1"),
                ("status", str(done)), ("status", str(queued)), ("status", str(failed)),
                ("status", "99"), ("export", str(done)), ("export", str(done), "-f", "json"),
                ("export", str(queued)), ("report", str(queued)), ("cancel", str(done)),
                ("cancel", "99")]
    for command in commands:
        local = tuner_cli(*command, columns=columns)
        remote = tuner_cli(*command, "--server", URL, columns=columns)
        assert (local.exit_code, local.stdout, local.stderr) == (
            remote.exit_code, remote.stdout, remote.stderr), command
        assert local.exception is None or isinstance(local.exception, SystemExit), command

    local = tuner_cli("cancel", str(queued))
    remote = tuner_cli("cancel", str(jobs["also_queued"]), "--server", URL)
    assert local.exit_code == remote.exit_code == 0, (local.stderr, remote.stderr)
    assert local.stdout == f"job {queued} cancelled\n"
    assert remote.stdout == f"job {jobs['also_queued']} cancelled\n"


def test_report_prints_the_same_facts_from_the_store_and_from_a_server(
    jobs: dict[str, int], api: TestClient, tmp_path: Path,
) -> None:
    url = get_settings().database_url
    with store.session_scope(url) as session:
        job = store.create_job(session, name=SPEC["name"], task=SPEC["task"],
                               spec=parse_job(SPEC).model_dump(mode="json"), state="running")
        store.set_result(session, job.id, {"leaderboard": ROWS, "seconds": 151.0,
                                           "export": EXPORT, "optimizers": stored_optimizers()})
        store.set_state(session, job, "succeeded")
        job_id = job.id

    local = tuner_cli("report", str(job_id), "-o", str(tmp_path / "local"), columns=100)
    remote = tuner_cli("report", str(job_id), "-o", str(tmp_path / "remote"), "--server", URL,
                       columns=100)

    assert local.exit_code == 0, local.stderr + repr(local.exception)
    assert remote.exit_code == 0, remote.stderr + repr(remote.exception)
    # Everything above the line naming where report.html went (a folder of each).
    shown, _, written = local.stdout.partition("\nreport: ")
    assert "tunability and sensitivity (val_accuracy)" in shown, local.stdout
    assert re.search(r"^│ adam +│ +0\.723 │ +3 of 4 │ +0%/50%/0% │", shown, re.M), shown
    assert "warning: adam: 50% of its trials diverged" in shown
    assert shown == remote.stdout.partition("\nreport: ")[0]
    assert str((tmp_path / "local" / "report.html").resolve()) in written
    assert LocalJobs().report_facts(job_id) == RemoteJobs(URL).report_facts(job_id)


def test_jobs_shows_names_and_tasks_as_text(jobs: dict[str, int], api: TestClient) -> None:
    for server in ((), ("--server", URL)):
        listed = tuner_cli("jobs", *server)

        assert listed.exit_code == 0, listed.stderr
        assert "🚋" not in listed.stdout and "\u200b" not in listed.stdout
        row = next(line for line in listed.stdout.splitlines()
                   if line.startswith(f"│ {jobs['done']} "))
        assert "│ a:train: " in row and "│ mypkg.loop:train " in row
        row = next(line for line in listed.stdout.splitlines()
                   if line.startswith(f"│ {jobs['queued']} "))
        assert "│ zero\\u200bwidth " in row
        row = next(line for line in listed.stdout.splitlines()
                   if line.startswith(f"│ {jobs['failed']} "))
        assert "│ [bold]loud[/] " in row

        narrow = tuner_cli("jobs", *server, columns=80)
        assert narrow.exit_code == 0, narrow.stderr
        assert all(len(line) <= 80 for line in narrow.stdout.splitlines())
        assert "🚋" not in narrow.stdout and "\u200b" not in narrow.stdout
        assert "a:train:" in narrow.stdout
        assert "…" not in narrow.stdout  # a long name or task wraps; none is cut


def test_status_shows_names_tasks_and_errors_as_text(jobs: dict[str, int],
                                                     api: TestClient) -> None:
    for server in ((), ("--server", URL)):
        done = tuner_cli("status", str(jobs["done"]), *server, columns=80)

        assert done.exit_code == 0, done.stderr
        assert done.stdout.startswith(
            f"job {jobs['done']} a:train: on mypkg.loop:train: succeeded\n"), done.stdout
        assert "🚋" not in done.stdout
        assert "  sgd        4/4 trials  ok 3 · pruned 1 · best 0.975\n" in done.stdout
        lines = done.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines)
        assert any(line.startswith("1   sgd ") for line in lines), done.stdout

        queued = tuner_cli("status", str(jobs["queued"]), *server)
        assert queued.exit_code == 0, queued.stderr
        assert queued.stdout == (f"job {jobs['queued']} zero\\u200bwidth on digits-mlp: "
                                 "queued\n")

        failed = tuner_cli("status", str(jobs["failed"]), *server)
        assert failed.exit_code == 0, failed.stderr
        assert failed.stdout == (f"job {jobs['failed']} [bold]loud[/] on digits-mlp: failed\n"
                                 f"error: {ERROR}\n")


def test_follow_shows_the_leaderboard_titled_with_the_users_text(
    jobs: dict[str, int], api: TestClient,
) -> None:
    for server in ((), ("--server", URL)):
        watched = tuner_cli("status", str(jobs["done"]), "--watch", *server, columns=80)

        assert watched.exit_code == 0, watched.stderr
        lines = [line.rstrip() for line in watched.stdout.splitlines()]
        assert f"job {jobs['done']}: a:train: on mypkg.loop:train" in lines, watched.stdout
        assert "best optimizer: sgd  (151 s)\n" in watched.stdout
        assert "🚋" not in watched.stdout


def test_a_state_or_limit_no_source_takes_is_a_usage_error(jobs: dict[str, int],
                                                          api: TestClient) -> None:
    from typing import get_args

    from tuner.cli._jobs import JobStateName

    assert set(get_args(JobStateName)) == {state.value for state in store.JobState}
    for server in ((), ("--server", URL)):
        for option in (("--state", ":train:"), ("--limit", "0")):
            result = tuner_cli("jobs", *option, *server)

            assert result.exit_code == 2, (option, result.stdout, result.exception)
            assert f"Invalid value for '{option[0]}'" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
