"""The MLflow client side for real: a job logging to an `mlflow server` over HTTP, and what a
person sees of it in the MLflow UI (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tuner.config import get_settings
from tuner.jobs import create_local_job, run_job
from tuner.spec import parse_job
from tuner.tracking import experiment_link

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

CHROMIUM = "/usr/bin/chromium"
JOB = {"name": "over-http", "task": "digits-logreg", "optimizers": ["sgd", "adam"],
       "trials": 3, "epochs": 3, "final_seeds": 2, "max_concurrent": 2,
       "metric": "val_accuracy", "mode": "max"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server on loopback, artifacts served through it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert process.poll() is None, "mlflow server exited"
        assert time.monotonic() < deadline, "mlflow server did not come up within 180 s"
        time.sleep(1)
    try:
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def job_over_http(mlflow_server: str) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        settings = get_settings()
        spec = parse_job(JOB)
        job_id = create_local_job(settings, spec)
        outcome = run_job(settings, job_id, spec)
    return {"job_id": job_id, "outcome": outcome, "url": mlflow_server}


def test_a_job_logs_everything_to_a_tracking_server(job_over_http: dict) -> None:
    client = MlflowClient(tracking_uri=job_over_http["url"])
    outcome = job_over_http["outcome"]
    experiment = client.get_experiment(outcome.experiment_id)
    assert experiment.name == f"job-{job_over_http['job_id']}-over-http"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    levels = [r.data.tags["tuner.level"] for r in runs]
    assert levels.count("job") == 1
    assert levels.count("optimizer") == 2
    assert levels.count("trial") == 2 * JOB["trials"]
    assert levels.count("final") == 2 * JOB["final_seeds"]
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)
    for run in runs:
        if run.data.tags["tuner.level"] == "trial" and run.data.tags["tuner.state"] == "COMPLETE":
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert [m.step for m in history] == [1, 2, 3]
    # The job run holds the leaderboard, the export and the report, served over HTTP.
    artifacts = {a.path for a in client.list_artifacts(outcome.job_run_id)}
    assert {"export.yaml", "leaderboard.json", "report"} <= artifacts
    report = {a.path for a in client.list_artifacts(outcome.job_run_id, "report")}
    assert "report/report.html" in report
    assert "report/convergence.png" in report
    local = client.download_artifacts(outcome.job_run_id, "export.yaml")
    assert Path(local).read_text().startswith(f"job: {job_over_http['job_id']}\n")


def test_the_ui_link_opens_the_job_with_its_results_visible(
    job_over_http: dict, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{CHROMIUM} is required in CI (.ci/run installs it)")
        pytest.skip(f"no {CHROMIUM} here")
    from playwright.sync_api import sync_playwright

    outcome = job_over_http["outcome"]
    link = experiment_link(job_over_http["url"], outcome.experiment_id)
    leader = outcome.leaderboard[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(link)
        names = page.locator(".ag-pinned-left-cols-container [role=row]")
        names.first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "runs.png"))
        collapsed = " ".join(names.all_inner_texts())
        # One "+" opens the job: its optimizers, each named with its rank and final mean.
        names.first.locator("button").last.click()
        page.locator(".ag-pinned-left-cols-container [role=row]").nth(2).wait_for()
        page.screenshot(path=str(tmp_path / "runs-expanded.png"))
        expanded = " ".join(names.all_inner_texts())
        browser.close()
    assert f"job {job_over_http['job_id']} over-http · {leader['optimizer']}" in collapsed
    mean = f"{leader['mean']:.4g}"
    assert f"{leader['optimizer']} #1 {mean}±" in expanded
    assert f"{outcome.leaderboard[1]['optimizer']} #2 " in expanded
