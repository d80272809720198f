"""``tuner report`` on real jobs: the terminal leaderboard, report.html and valid PNGs.

A real small job runs on the session's Ray into an isolated embedded store (``tuner_home``),
then the command runs through Typer's CliRunner, as a user would type it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import get_settings
from tuner.engine.jobs import create_local_job, run_job
from tuner.spec import parse_job

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session", "tuner_home")]

WIDE = {"COLUMNS": "250"}  # Rich folds table cells on CliRunner's default 80 columns
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DIGITS = {
    "name": "report-digits", "task": "digits-logreg", "optimizers": ["momentum", "adam"],
    "trials": 5, "epochs": 4, "metric": "val_accuracy", "mode": "max", "pruner": "none",
    "final_seeds": 3, "max_concurrent": 2, "seed": 0, "target": 0.9,
}
ROSENBROCK = {
    "name": "report-rosenbrock", "task": "rosenbrock", "optimizers": ["adam", "momentum"],
    "trials": 3, "epochs": 4, "metric": "val_distance", "mode": "min", "final_seeds": 2,
    "max_concurrent": 2, "seed": 0,
}


def run(document: dict[str, Any]) -> int:
    settings = get_settings()
    spec = parse_job(document)
    job_id = create_local_job(settings, spec)
    run_job(settings, job_id, spec)
    return job_id


def tuner(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, path


def test_report_prints_the_leaderboard_and_writes_html_with_pngs(tmp_path: Path) -> None:
    job_id = run(DIGITS)
    out = tmp_path / "rep"

    result = tuner("report", str(job_id), "-o", str(out))

    assert result.exit_code == 0, result.stderr
    assert f"job {job_id}: report-digits on digits-logreg" in result.stdout
    assert "final val_accuracy ↑" in result.stdout and "Welch" in result.stdout
    assert "│ momentum " in result.stdout and "│ adam " in result.stdout
    assert "tunability and sensitivity" in result.stdout
    assert f"report: {(out / 'report.html').resolve()}" in result.stdout.replace("\n", "")
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"convergence.png", "lr_sensitivity.png", "tunability.png",
                    "importance.png", "seeds_vs_hyperparameters.png"}
    for name in pngs:
        assert_png(out / name)
    html = (out / "report.html").read_text()
    for name in pngs:
        assert f"<img src='{name}'" in html
    assert "<h2>Protocol</h2>" in html and "Welch&#x27;s two-sided t-test" in html
    assert "seeds 42–44" in html
    assert "epoch (s) at target 0.9" in html
    assert "task: digits-logreg" in html  # the job file, for re-running it
    assert "Problem instance: task digits-logreg, 1437 training and 360 validation examples, " \
        "data SHA-256 " in html


def test_a_rosenbrock_job_gets_the_landscape_plot(tmp_path: Path) -> None:
    job_id = run(ROSENBROCK)

    result = tuner("report", str(job_id), "-o", str(tmp_path / "rep"))

    assert result.exit_code == 0, result.stderr
    assert_png(tmp_path / "rep" / "landscape.png")
    assert "landscape.png" in (tmp_path / "rep" / "report.html").read_text()


def test_report_of_an_unknown_or_unfinished_job_is_one_red_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = tuner("report", "99")
    assert result.exit_code == 1
    assert result.stderr == "error: no job 99 in this store (see tuner jobs)\n"

    settings = get_settings()
    job_id = create_local_job(settings, parse_job(DIGITS))
    monkeypatch.chdir(tmp_path)
    result = tuner("report", str(job_id))
    assert result.exit_code == 1
    assert result.stderr == f"error: job {job_id} is running; a report needs a succeeded job\n"
    assert not (tmp_path / f"report-{job_id}").exists()
