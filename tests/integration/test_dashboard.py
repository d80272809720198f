"""``tuner dashboard``: optuna-dashboard on the jobs database, opened at a job's studies.

Two jobs' studies are made with Optuna itself in an embedded store; the command runs as a
real process, and Chromium (Playwright) opens the link it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tests.integration.browser import chromium_page, require_chromium
from tests.integration.servers import free_port
from tuner import store
from tuner.cli import app
from tuner.config import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("tuner_home")]


def _job_with_studies(optimizers: list[str], *, seed: int) -> int:
    """A job in the store and one Optuna study per optimizer, as the coordinator names them."""
    settings = get_settings()
    settings.ensure_home()
    url = settings.database_url
    store.upgrade(url)
    with store.session_scope(url) as session:
        job = store.create_job(session, name="dash", task="digits-logreg", origin="cli",
                               spec={"name": "dash", "task": "digits-logreg",
                                     "optimizers": optimizers, "metric": "val_loss",
                                     "mode": "min"})
        session.flush()
        job_id = job.id
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for k, name in enumerate(optimizers):
        study = optuna.create_study(storage=url, study_name=f"job-{job_id}-{name}",
                                    sampler=optuna.samplers.RandomSampler(seed=seed + k))
        study.optimize(lambda t: (t.suggest_float("lr", 1e-4, 1, log=True) - 0.01) ** 2,
                       n_trials=4)
    return job_id


def test_print_link_names_the_jobs_studies() -> None:
    first = _job_with_studies(["sgd", "adam"], seed=0)
    second = _job_with_studies(["nag"], seed=10)
    storage = optuna.storages.RDBStorage(get_settings().database_url)
    ids = {name: storage.get_study_id_from_name(f"job-{first}-{name}") for name in ("sgd", "adam")}

    result = CliRunner().invoke(app, ["dashboard", str(first), "--port", "8123",
                                      "--print-link"])

    assert result.exit_code == 0, result.stderr
    base = "http://127.0.0.1:8123/dashboard"
    assert result.stdout == (
        f"optuna-dashboard: {base}/compare-studies?ids={ids['sgd']},{ids['adam']}\n"
        f"job {first}'s studies (job-{first}-<optimizer>):\n"
        f"  sgd        {base}/studies/{ids['sgd']}\n"
        f"  adam       {base}/studies/{ids['adam']}\n"
    )
    latest = CliRunner().invoke(app, ["dashboard", "--print-link"])
    nag = storage.get_study_id_from_name(f"job-{second}-nag")
    assert latest.stdout.startswith(
        f"optuna-dashboard: http://127.0.0.1:8080/dashboard/compare-studies?ids={nag}\n")


def test_a_job_without_studies_and_unknown_jobs() -> None:
    settings = get_settings()
    settings.ensure_home()
    store.upgrade(settings.database_url)
    empty = CliRunner().invoke(app, ["dashboard", "--print-link"])
    assert empty.exit_code == 1
    assert empty.stderr == "error: no jobs in this store yet: try tuner demo\n"
    with store.session_scope(settings.database_url) as session:
        job = store.create_job(session, name="q", task="digits-logreg", origin="api",
                               spec={"optimizers": ["adam"]})
        session.flush()
        job_id = job.id
    queued = CliRunner().invoke(app, ["dashboard", str(job_id), "--print-link"])
    assert queued.exit_code == 0
    assert queued.stdout == ("optuna-dashboard: http://127.0.0.1:8080/dashboard\n"
                             f"job {job_id} has no studies yet; they appear once it starts\n")
    unknown = CliRunner().invoke(app, ["dashboard", "99", "--print-link"])
    assert unknown.exit_code == 1
    assert unknown.stderr == "error: no job 99 in this store (see tuner jobs)\n"


def test_the_dashboard_shows_the_jobs_studies_in_a_browser(tmp_path: Path) -> None:
    require_chromium()
    other = _job_with_studies(["rmsprop"], seed=20)
    job_id = _job_with_studies(["sgd", "momentum", "adam"], seed=0)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from tuner.cli import main; main()", "dashboard", str(job_id),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and lines[-1].startswith("serving "), "".join(lines) + (
            process.stderr.read() if process.stderr else "")
        link = lines[0].split(": ", 1)[1].strip()
        study_page = lines[2].split()[1]
        shown = _page_text(link, tmp_path / "compare.png", wait_for="Best Value of")
        one = _page_text(study_page, tmp_path / "study.png", wait_for="Trials")
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)

    for name in ("sgd", "momentum", "adam"):
        # Listed, and drawn in the history plot of the comparison.
        assert f"job-{job_id}-{name}" in shown["text"], name
        assert f"Best Value of job-{job_id}-{name}" in shown["svg"], name
    assert f"Best Value of job-{other}-rmsprop" not in shown["svg"]
    assert f"job-{job_id}-sgd" in one["text"] and "Trials" in one["text"]


def _page_text(url: str, screenshot: Path, *, wait_for: str) -> dict[str, str]:
    with chromium_page(1600, 1000) as page:
        page.goto(url)
        deadline = time.monotonic() + 60
        while wait_for not in page.locator("body").inner_html():
            if time.monotonic() > deadline:
                page.screenshot(path=str(screenshot))
                raise AssertionError(f"{url}: no {wait_for!r} after 60 s (see {screenshot})")
            page.wait_for_timeout(500)
        page.screenshot(path=str(screenshot))
        texts = {"text": page.locator("body").inner_text(),
                 "svg": " ".join(page.locator("svg text").all_text_contents())}
    return texts
