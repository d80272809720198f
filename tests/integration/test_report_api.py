"""The report from the API (``GET /v1/jobs/{id}/report``) and ``tuner report ID --server``.

A real small job runs on the session's Ray into an isolated embedded store; the app serves
that store, in process (TestClient) and over real HTTP (uvicorn on loopback) for the CLI.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.integration.servers import free_port
from tuner import store
from tuner.cli import app
from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.spec import parse_job

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

JOB = {"name": "served-report", "task": "digits-logreg", "optimizers": ["sgd", "adam"],
       "trials": 3, "epochs": 3, "final_seeds": 2, "max_concurrent": 2, "pruner": "none",
       "metric": "val_accuracy", "mode": "max"}
PNG = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A succeeded job and a queued one in an embedded store, and the API on it."""
    home = tmp_path_factory.mktemp("report-api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNER_HOME", str(home))
        for name in ("TUNER_DB_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "TUNER_API_TOKEN"):
            mp.delenv(name, raising=False)
        settings = get_settings()
        spec = parse_job(JOB)
        job_id = create_local_job(settings, spec)
        outcome = run_job(settings, job_id, spec)
        with store.session_scope(settings.database_url) as session:
            queued = store.create_job(session, name="later", task="digits-logreg",
                                      spec=spec.model_dump(mode="json"), origin="api")
            session.flush()
            queued_id = queued.id
        from tuner.api import create_app

        api = create_app(settings)
        # A loopback Host, as a server without a token requires (tuner.api._guard).
        with TestClient(api, base_url="http://127.0.0.1:8000") as client:
            yield {"client": client, "app": api, "job_id": job_id, "queued_id": queued_id,
                   "outcome": outcome, "settings": settings, "home": home}


def test_the_report_comes_whole_with_its_plots_inlined(served: dict[str, Any]) -> None:
    job_id = served["job_id"]

    response = served["client"].get(f"/v1/jobs/{job_id}/report")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "<h2>Protocol</h2>" in html
    assert served["outcome"].leaderboard[0]["optimizer"] in html
    images = PNG.findall(html)
    assert len(images) >= 3
    assert "src='convergence.png'" not in html  # nothing left to fetch separately
    import base64

    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)


def test_one_report_file_and_the_errors(served: dict[str, Any]) -> None:
    client, job_id = served["client"], served["job_id"]

    png = client.get(f"/v1/jobs/{job_id}/report/convergence.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"

    missing = client.get(f"/v1/jobs/{job_id}/report/secrets.txt")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith(
        f"job {job_id}'s report has no file 'secrets.txt'; it has convergence.png, ")
    # A path is no name of a report file.
    assert client.get(f"/v1/jobs/{job_id}/report/..%2F..%2Ftuner.db").status_code == 404

    queued = client.get(f"/v1/jobs/{served['queued_id']}/report")
    assert queued.status_code == 409
    assert queued.json() == {
        "detail": f"job {served['queued_id']} is queued; a report needs a succeeded job"}
    assert client.get("/v1/jobs/999/report").json() == {
        "detail": "no job 999 in this store (see tuner jobs)"}


def test_a_report_gone_from_the_disk_is_drawn_again(served: dict[str, Any]) -> None:
    job_id = served["job_id"]
    folder = served["home"] / "reports" / f"job-{job_id}"
    shutil.rmtree(folder)

    response = served["client"].get(f"/v1/jobs/{job_id}/report")

    assert response.status_code == 200
    assert len(PNG.findall(response.text)) >= 3
    assert (folder / "report.html").is_file()


def test_tuner_report_fetches_the_servers_report(served: dict[str, Any],
                                                 tmp_path: Path) -> None:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(served["app"], host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.1)
    try:
        job_id = served["job_id"]
        url = f"http://127.0.0.1:{port}"
        out = tmp_path / "fetched"
        result = CliRunner().invoke(app, ["report", str(job_id), "-o", str(out)],
                                    env={"COLUMNS": "80", "TUNER_URL": url})
        queued = CliRunner().invoke(app, ["report", str(served["queued_id"]), "--server", url])
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    assert result.exit_code == 0, result.stderr + repr(result.exception)
    leader = served["outcome"].leaderboard[0]
    assert re.search(rf"^1 +{leader['optimizer']} +", result.stdout, re.M), result.stdout
    html = (out / "report.html").read_text()
    assert "<h2>Protocol</h2>" in html and len(PNG.findall(html)) >= 3
    assert f"{(out / 'report.html').resolve()}" in result.stdout
    assert f"from {url}/v1/jobs/{job_id}/report" in result.stdout
    assert queued.exit_code == 1
    assert queued.stderr == (
        f"error: job {served['queued_id']} is queued; a report needs a succeeded job\n")
