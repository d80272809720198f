"""The ``tuner`` command line through Typer's CliRunner, on an isolated embedded store.

Click 8.2+ keeps stdout and stderr apart on the result (``mix_stderr`` is gone): errors are
asserted on ``result.stderr``, tables and files on ``result.stdout``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import search_spaces
from tuner import load_optimizer, store
from tuner.cli import app
from tuner.config import get_settings
from tuner.task import BUILTIN_TASKS, available_tasks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("tuner_home")]

# Rich sizes tables to the terminal; CliRunner has none (80 columns would fold the cells).
WIDE = {"COLUMNS": "250"}
SPACES = ", ".join(search_spaces.available())
TINY = """\
name: tiny
task: digits-logreg
optimizers: [adam]
trials: 2
epochs: 2
final_seeds: 1
max_concurrent: 2
"""


def tuner(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def job_count() -> int:
    settings = get_settings()
    store.upgrade(settings.database_url)
    with store.session_scope(settings.database_url) as session:
        return store.count_jobs(session)


# -- what can be tuned, on what ----------------------------------------------------------------


def test_spaces_lists_every_search_space_with_its_torch_class() -> None:
    result = tuner("spaces")

    assert result.exit_code == 0, result.stderr
    for name in search_spaces.available():
        space = search_spaces.load(name)
        assert f"│ {name} " in result.stdout, name
        assert space.torch_class in result.stdout
        assert space.description in result.stdout
    assert "lr LU[1e-05, 0.1]" in result.stdout  # adam's learning rate, log-uniform
    assert "space_overrides" in result.stdout


def test_spaces_shows_one_space() -> None:
    result = tuner("spaces", "nag")

    assert result.exit_code == 0, result.stderr
    assert "│ nag " in result.stdout and "nesterov=True" in result.stdout
    assert "│ adam " not in result.stdout


def test_spaces_with_an_unknown_name_is_one_red_line() -> None:
    result = tuner("spaces", "nosuch")

    assert result.exit_code == 1
    assert result.stderr == f"error: unknown search space 'nosuch'; available: {SPACES}\n"


def test_tasks_lists_every_builtin_task_with_its_metrics() -> None:
    result = tuner("tasks")

    assert result.exit_code == 0, result.stderr
    for info in available_tasks():
        if info.name not in BUILTIN_TASKS:
            continue
        line = next(line for line in result.stdout.splitlines() if f"│ {info.name} " in line)
        assert info.kind in line and info.description in line
        assert ", ".join(info.reports) in line  # a training loop lists its own names
    assert "val_return, train_return, train_loss" in result.stdout  # cartpole-reinforce
    assert "package.module:factory" in result.stdout
    assert "package.module:train" in result.stdout  # your own training loop


# -- bad input never reaches storage -----------------------------------------------------------


def test_run_with_a_bad_job_file_exits_1_with_the_error_and_stores_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: digits-logreg\noptimizers: [nosuchopt]\n")

    result = tuner("run", str(path))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {path}: optimizers[0]: unknown optimizer 'nosuchopt'; available: {SPACES} "
        "(see tuner spaces)\n"
    )
    assert job_count() == 0
    listed = tuner("jobs")
    assert listed.exit_code == 0
    assert listed.stdout == "no jobs yet: try tuner demo or tuner run JOB.yaml\n"


def test_run_with_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: digits-logreg\noptimizers: [adam\ntrials: 2\n")

    result = tuner("run", str(path))

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {path}: not valid YAML at line 3, column 7: expected ',' or ']', but got ':'\n"
    )
    assert job_count() == 0


def test_run_with_a_missing_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    result = tuner("run", str(path))

    assert result.exit_code == 1
    assert result.stderr == f"error: {path}: cannot read the job file: No such file or directory\n"


def test_an_error_prints_the_users_text_verbatim(tmp_path: Path) -> None:
    # The message quotes what the user wrote; square brackets in it are text, not markup.
    path = tmp_path / "bad.yaml"
    path.write_text("task: digits-logreg\noptimizers: ['[adam]']\n")

    result = tuner("run", str(path))

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {path}: optimizers[0]: unknown optimizer '[adam]'; available: {SPACES} "
        "(see tuner spaces)\n"
    )


def test_usage_errors_exit_2() -> None:
    assert tuner("run").exit_code == 2
    assert tuner("status", "abc").exit_code == 2
    assert tuner("export", "1", "--nope").exit_code == 2


def test_a_job_that_is_not_there() -> None:
    for args in (("export", "99"), ("status", "99"), ("ui", "99", "--print-link")):
        result = tuner(*args)

        assert result.exit_code == 1, args
        assert result.stderr == "error: no job 99 in this store (see tuner jobs)\n", args


def test_ui_without_jobs_prints_the_bare_link() -> None:
    result = tuner("ui", "--print-link")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "MLflow UI: http://127.0.0.1:5000\n"


# -- a real run, then everything that reads it -------------------------------------------------


@pytest.mark.usefixtures("ray_session")
def test_run_then_jobs_status_export_and_ui(tmp_path: Path) -> None:
    job_file = tmp_path / "tiny.yaml"
    job_file.write_text(TINY)

    ran = tuner("run", str(job_file))

    assert ran.exit_code == 0, ran.stderr + repr(ran.exception)
    settings = get_settings()
    with store.session_scope(settings.database_url) as session:
        job = store.get_job(session, 1)
        assert job.state == "succeeded"
        experiment_id = job.mlflow_experiment_id
    # A succeeded job opens on its saved leaderboard view of the Runs table.
    link = (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
            "?workflowType=machine_learning&viewStateShareKey=leaderboard")
    assert "job 1 tiny: 1 optimizers × 2 trials × 2 epochs on digits-logreg" in ran.stdout
    assert "best optimizer: adam" in ran.stdout
    export_file = (settings.home / "exports" / "job-1.yaml").resolve()
    assert f"export:  {export_file}" in ran.stdout
    assert link in ran.stdout

    listed = tuner("jobs")
    assert listed.exit_code == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("│ 1 ")]
    assert "tiny" in row and "digits-logreg" in row and "succeeded" in row and "adam" in row

    status = tuner("status", "1")
    assert status.exit_code == 0, status.stderr
    assert status.stdout.startswith("job 1 tiny on digits-logreg: succeeded\n")
    # Zero counts are left out (a line fits 80 columns).
    assert "  adam       2/2 trials  ok 2 · best " in status.stdout
    assert "leaderboard" in status.stdout

    out = tmp_path / "out" / "best.json"
    exported = tuner("export", "1", "--format", "json", "-o", str(out))
    assert exported.exit_code == 0, exported.stderr
    assert exported.stdout == f"wrote {out}\n"
    document = json.loads(out.read_text())
    assert document["job"] == 1 and document["best"] == "adam"
    assert document["task"] == "digits-logreg"
    assert document["metric"] == {"name": "val_loss", "mode": "min"}

    as_yaml = tuner("export", "1")
    assert as_yaml.exit_code == 0, as_yaml.stderr
    assert as_yaml.stdout == export_file.read_text()

    as_python = tuner("export", "1", "--format", "python")
    assert as_python.exit_code == 0, as_python.stderr
    namespace: dict[str, Any] = {}
    exec(compile(as_python.stdout, "best.py", "exec"), namespace)
    optimizer, _ = namespace["make_best"](torch.nn.Linear(3, 2).parameters())
    assert isinstance(optimizer, torch.optim.Adam)
    assert namespace["BATCH_SIZE"]["adam"] == document["optimizers"]["adam"]["batch_size"]

    xml = tuner("export", "1", "--format", "xml")
    assert xml.exit_code == 1
    assert xml.stderr == "error: --format: unknown format 'xml'; allowed: yaml, json, python\n"

    for args in (("ui", "1", "--print-link"), ("ui", "--print-link")):
        ui = tuner(*args)
        assert ui.exit_code == 0, ui.stderr
        assert ui.stdout == f"MLflow UI: {link}\n"

    # The file `tuner export --format json` wrote is an export load_optimizer reads.
    optimizer, _ = load_optimizer(out, torch.nn.Linear(3, 2).parameters())
    assert isinstance(optimizer, torch.optim.Adam)
