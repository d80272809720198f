"""The MLflow client side for real: a job logging to an `mlflow server` over HTTP, and what a
person sees of it in the MLflow UI (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.integration.browser import chromium_page, require_chromium
from tests.integration.servers import free_port
from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.spec import parse_job
from tuner.tracking import LEADERBOARD_VIEW, JobTracker, experiment_link

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

JOB: dict[str, Any] = {
    "name": "over-http", "task": "digits-logreg", "optimizers": ["sgd", "adam"], "trials": 3,
    "epochs": 3, "final_seeds": 2, "max_concurrent": 2, "metric": "val_accuracy", "mode": "max",
}


@contextmanager
def serve_mlflow(store_uri: str, artifacts: Path) -> Iterator[str]:
    """A real tracking server on loopback over ``store_uri``, artifacts served through it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", store_uri, "--artifacts-destination", str(artifacts),
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
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: it was asked; now it must
            os.killpg(process.pid, 9)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the module's tracking server: its SQLite store and its artifacts."""
    return tmp_path_factory.mktemp("mlflow-server")


@pytest.fixture(scope="module")
def mlflow_server(mlflow_store: Path) -> Iterator[str]:
    with serve_mlflow(f"sqlite:///{mlflow_store / 'mlflow.db'}",
                      mlflow_store / "artifacts") as url:
        yield url


@pytest.fixture(scope="module")
def job_over_http(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        # Module-scoped: the per-test tuner_home is not there yet; its own store, then.
        mp.setenv("TUNER_HOME", str(tmp_path_factory.mktemp("tuner-home")))
        mp.delenv("TUNER_DB_URL", raising=False)
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
    assert {"export.yaml", "leaderboard.json", "leaderboard_table.json", "report"} <= artifacts
    table = json.loads(Path(client.download_artifacts(outcome.job_run_id,
                                                      "leaderboard_table.json")).read_text())
    assert table["columns"][:4] == ["rank", "optimizer", "final_mean", "final_std"]
    assert [row[1] for row in table["data"]] == [r["optimizer"] for r in outcome.leaderboard]
    # The saved view the leaderboard link opens, and the rank that orders it.
    assert f"mlflow.sharedViewState.{LEADERBOARD_VIEW}" in experiment.tags
    assert client.get_run(outcome.job_run_id).data.metrics["rank"] == 0
    report = {a.path for a in client.list_artifacts(outcome.job_run_id, "report")}
    assert "report/report.html" in report
    assert "report/convergence.png" in report
    local = client.download_artifacts(outcome.job_run_id, "export.yaml")
    assert Path(local).read_text().startswith(f"job: {job_over_http['job_id']}\n")


def test_the_ui_link_opens_the_job_with_its_results_visible(
    job_over_http: dict, tmp_path: Path
) -> None:
    require_chromium()
    outcome = job_over_http["outcome"]
    link = experiment_link(job_over_http["url"], outcome.experiment_id)
    leader = outcome.leaderboard[0]
    with chromium_page(1500, 900) as page:
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
    assert f"job {job_over_http['job_id']} over-http · {leader['optimizer']}" in collapsed
    mean = f"{leader['mean']:.4g}"
    assert f"{leader['optimizer']} #1 {mean}±" in expanded
    assert f"{outcome.leaderboard[1]['optimizer']} #2 " in expanded


# -- the first screen of the leaderboard link ------------------------------------------------


def _first_screen(link: str, tmp_path: Path, name: str) -> list[dict[str, str]]:
    """The run rows a 1600×1000 window shows on opening ``link``, without a click: each
    row's name and final mean cell, top to bottom."""
    with chromium_page(1600, 1000) as page:
        page.goto(link)
        page.locator(".ag-pinned-left-cols-container [role=row]").first.wait_for(
            timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(tmp_path / f"{name}.png"))
        rows = page.evaluate("""() => {
            const visible = (el) => { const r = el.getBoundingClientRect();
                                      return r.bottom > 0 && r.top < window.innerHeight; };
            const cell = (row, id) => { const c = row.querySelector(`[col-id="${id}"]`);
                                        return c ? c.innerText.trim() : null; };
            const byIndex = {};
            for (const row of document.querySelectorAll('.ag-row[row-index]')) {
                const i = Number(row.getAttribute('row-index'));
                byIndex[i] = byIndex[i] || {index: i, visible: visible(row)};
                const name = cell(row, 'attributes.`Run Name`');
                // The cell's text starts with its color picker's value: the name is last.
                if (name !== null) byIndex[i].name = name.split('\\n').pop();
                for (const c of row.querySelectorAll('[col-id^="metrics."]')) {
                    byIndex[i][c.getAttribute('col-id')] = c.innerText.trim();
                }
            }
            return Object.values(byIndex).sort((a, b) => a.index - b.index);
        }""")
    return [row for row in rows if row["visible"]]


def _assert_leaderboard_first(rows: list[dict[str, str]], *, job_name: str,
                              board: list[dict], metric: str) -> None:
    names = [row["name"] for row in rows]
    n = len(board)
    assert len(rows) > n, names
    # The job run, then every optimizer run in rank order, each named with its result.
    assert names[0].startswith(job_name) and f"· {board[0]['optimizer']} " in names[0], names
    for row, entry in zip(rows[1:n + 1], board, strict=True):
        assert row["name"].startswith(f"{entry['optimizer']} #{entry['rank']} "), names
        assert row["metrics.`rank`"] == str(entry["rank"])
        # The final mean is readable in full in its column.
        shown = row[f"metrics.`final_mean_{metric}`"]
        assert "…" not in shown and float(shown) == pytest.approx(entry["mean"], rel=1e-6)
    assert rows[0]["metrics.`rank`"] == "0"


def test_the_leaderboard_link_opens_on_the_job_and_its_optimizers_in_rank_order(
    job_over_http: dict, tmp_path: Path
) -> None:
    require_chromium()
    outcome = job_over_http["outcome"]
    link = experiment_link(job_over_http["url"], outcome.experiment_id, leaderboard=True)

    rows = _first_screen(link, tmp_path, "leaderboard")

    _assert_leaderboard_first(rows, job_name=f"job {job_over_http['job_id']} over-http",
                              board=outcome.leaderboard, metric=JOB["metric"])


OPTIMIZERS = ["gd", "sgd", "minibatch", "momentum", "nag", "rmsprop", "adam"]


def test_a_job_with_a_thousand_runs_opens_on_its_leaderboard_too(
    mlflow_server: str, mlflow_store: Path, tmp_path: Path
) -> None:
    """1,000 trial runs, all newer than the job and optimizer runs: the table's first page
    (100 runs) still starts with them, because the server sorts by rank. The runs are
    written straight into the module server's store (an experiment of their own), as fast
    as the coordinator's tracker writes them, then seen through that server."""
    require_chromium()
    store_uri = f"sqlite:///{mlflow_store / 'mlflow.db'}"
    # The job's runs as the coordinator makes them, through the same tracker.
    tracker = JobTracker(store_uri, (mlflow_store / "big-artifacts").as_uri(), job_id=9,
                         job_name="big")
    tracker.start(spec={"task": "digits-mlp", "name": "big"}, optimizers=OPTIMIZERS)
    for number in range(1000):
        optimizer = OPTIMIZERS[number % len(OPTIMIZERS)]
        key = f"{optimizer}/trial/{number}"
        tracker.run_started(key, optimizer=optimizer, level="trial", number=number,
                            name=f"{optimizer} #{number}", params={"lr": 0.01}, tags={})
        tracker.run_finished(key, state="COMPLETE",
                             epochs=[{"epoch": 1, "metrics": {"val_loss": 1.0 + number}}])
    board: list[dict[str, Any]] = [
        {"rank": rank, "optimizer": name, "mean": 0.5 + rank / 100 + 1 / 3, "std": 0.01,
         "best": 0.5} for rank, name in enumerate(reversed(OPTIMIZERS), 1)]
    for row in board:
        tracker.log_optimizer(row["optimizer"], metrics={
            "rank": row["rank"], "final_mean_val_loss": row["mean"],
            "final_std_val_loss": row["std"], "best_val_loss": row["best"]},
            params={}, headline=f"#{row['rank']} {row['mean']:.4g}±{row['std']:.2g}")
    tracker.publish_leaderboard(board, metric="val_loss")
    tracker.finish_job(status="FINISHED", metrics={},
                       headline=f"{board[0]['optimizer']} {board[0]['mean']:.4g}")
    tracker.close()
    assert len(MlflowClient(tracking_uri=store_uri).search_runs(
        [tracker.experiment_id], max_results=2000)) == 1008

    link = experiment_link(mlflow_server, tracker.experiment_id, leaderboard=True)
    rows = _first_screen(link, tmp_path, "leaderboard-1000")

    _assert_leaderboard_first(rows, job_name="job 9 big", board=board, metric="val_loss")
