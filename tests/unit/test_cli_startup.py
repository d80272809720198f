"""``tuner --help`` starts light: none of torch, Ray, MLflow, Optuna is imported (issue 16,
item 6), nor the libraries the jobs sources load when opened (SQLAlchemy, httpx) or the
server's (FastAPI, uvicorn). Each check runs a fresh interpreter, as a user's shell does."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow", "optuna")
#: Loaded by the commands that need them: a jobs source when opened, ``tuner serve``.
DEFERRED = ("sqlalchemy", "httpx", "fastapi", "uvicorn")


def _imported(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m tuner ARGS``; the top-level packages it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tuner", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", done.stderr, re.M)
    return done, {name.split(".")[0] for name in names}


@pytest.mark.parametrize("args", [("--help",), ("jobs", "--help"), ("status", "--help"),
                                  ("serve", "--help"), ()])
def test_help_imports_no_heavy_library(args: tuple[str, ...]) -> None:
    done, packages = _imported(*args)

    assert "Usage" in done.stdout, done.stdout + done.stderr
    assert {"tuner", "typer", "rich"} <= packages  # the import log was read
    assert sorted(packages & set(HEAVY)) == []
    assert sorted(packages & set(DEFERRED)) == []


def test_after_help_sys_modules_holds_none_of_them() -> None:
    """The same, asked of the interpreter itself after the CLI answered ``--help``."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tuner.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY + DEFERRED!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
