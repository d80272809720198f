"""Hostile input on the command line (issue 11, points 5 and 6): job files that are not text
or explode, ids and output paths that cannot be, and user text with terminal escapes. Each is
one clear line on stderr, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.cli._text import as_text, printable, shown

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("tuner_home")]

WIDE = {"COLUMNS": "250"}
RED = "x\x1b[31mred"


def tuner(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def alias_bomb() -> str:
    """9 levels of 9 aliases: 377 bytes that expand to 9**9 (387 million) strings."""
    lines = ["task: digits-logreg", 'a: &a ["x","x","x","x","x","x","x","x","x"]']
    for level in range(1, 9):
        name, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("optimizers: [" + ",".join(["*i"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("content", "message"), [
    ("name: x\ntask: digits-logreg\noptimizers: [adam]\n".encode("utf-16"),
     "not UTF-8 text: byte 0xff at offset 0; a job file is YAML in UTF-8"),
    (b"task: digits-logreg\n\x89PNG\r\n\x1a\n",
     "not UTF-8 text: byte 0x89 at offset 20; a job file is YAML in UTF-8"),
    (b"task: digits-logreg\x00\noptimizers: [adam]\n",
     "not a text file: a NUL byte at offset 19; a job file is YAML in UTF-8"),
    (alias_bomb().encode(), "the document has more than 100000 values; a job has a few dozen"),
    (b"task: digits-logreg\noptimizers: [adam]\nspace_overrides: " + b"{a: " * 40 + b"1"
     + b"}" * 40 + b"\n",
     "space_overrides.a.a: nested deeper than 32 levels; a job is a few levels deep"),
])
def test_job_files_that_are_not_job_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(content)
    for command in ("run", "submit"):
        result = tuner(command, str(path))
        assert result.exit_code == 1, (command, result.stderr, result.exception)
        assert result.stderr == f"error: {path}: {message}\n", command


def test_the_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """The 377-byte file once took 55 s and 2.8 GB: the walk stops at its value budget."""
    import tracemalloc

    from tuner.errors import SpecError
    from tuner.spec import load_job_file

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 400
    tracemalloc.start()
    with pytest.raises(SpecError):
        load_job_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024 * 1024, peak


def test_a_job_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("task: digits-logreg\noptimizers: [adam]\n#" + "x" * (1024 * 1024) + "\n")
    result = tuner("run", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"error: {path}: the job file is larger than 1048576 bytes; a job "
                             "file is a few hundred\n")


@pytest.mark.parametrize("command", ["export", "status", "report", "cancel", "resume", "ui"])
def test_job_ids_that_no_table_can_hold_are_usage_errors(command: str) -> None:
    result = tuner(command, "99999999999999999999999")
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert "Invalid value for 'job_id'" in result.stderr
    assert "less than or equal to 2147483647" in result.stderr
    assert "Traceback" not in result.stderr
    assert tuner(command, "0").exit_code == 2


def test_user_text_with_control_characters_is_shown_escaped() -> None:
    assert printable(RED) == "x\\x1b[31mred"
    assert printable("a\nb\tc\r\x07\x7f\x9b") == "a\\nb\\tc\\r\\x07\\x7f\\x9b"
    assert printable("left\u202eright\u2066") == "left\\u202eright\\u2066"
    assert printable("line one\nline two", keep_newlines=True) == "line one\nline two"
    assert printable("optimiseur ü → ok") == "optimiseur ü → ok"
    assert shown("[bold]x\x1b") == "\\[bold]x\\x1b"
    # Invisible characters too: zero-width space and joiners, word joiner, soft hyphen, BOM,
    # a tag character; a lone surrogate (not even UTF-8) is escaped, not a crash.
    assert printable("zero\u200bwidth\u200c\u200d\u2060\u00ad\ufeff") == (
        "zero\\u200bwidth\\u200c\\u200d\\u2060\\xad\\ufeff")
    assert printable("tag\U000e0041") == "tag\\U000e0041"
    assert printable("half\udc80") == "half\\udc80"
    # ... while text that is visible stays itself: emoji, accents, CJK, a no-break space.
    assert printable("🚋 naïve 列車\u00a0ok") == "🚋 naïve 列車\u00a0ok"
    # Text is shown as text: no markup, no emoji code, whatever console prints it.
    assert as_text("mypkg.loop:train:").plain == "mypkg.loop:train:"
    assert as_text("[bold]x[/] \u200b").plain == "[bold]x[/] \\u200b"


@pytest.mark.usefixtures("ray_session")
def test_a_job_named_with_escapes_and_outputs_that_cannot_be_written(tmp_path: Path) -> None:
    job_file = tmp_path / "red.json"
    # JSON is YAML: the escape goes into the name as the job did.
    job_file.write_text('{"name": "x\\u001b[31mred", "task": "digits-logreg", '
                        '"optimizers": ["adam"], "trials": 2, "epochs": 2, "final_seeds": 1}')
    ran = tuner("run", str(job_file))
    assert ran.exit_code == 0, ran.stderr + repr(ran.exception)
    assert "\x1b" not in ran.stdout
    assert "job 1 x\\x1b[31mred: 1 optimizers" in ran.stdout

    listed = tuner("jobs")
    assert listed.exit_code == 0, listed.stderr
    assert "\x1b" not in listed.stdout
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("│ 1 ")]
    assert "x\\x1b[31mred" in row

    status = tuner("status", "1")
    assert status.exit_code == 0, status.stderr
    assert "\x1b" not in status.stdout
    assert status.stdout.startswith("job 1 x\\x1b[31mred on digits-logreg: succeeded\n")

    exported = tuner("export", "1", "-o", "/etc/passwd/x")
    assert exported.exit_code == 1
    assert exported.stderr == ("error: --output: cannot write /etc/passwd/x: /etc/passwd is a "
                               "file, not a folder\n")
    exported = tuner("export", "1", "-o", "/proc/nope/x.yaml")
    assert exported.exit_code == 1
    assert exported.stderr.startswith("error: --output: cannot write /proc/nope/x.yaml: ")
    reported = tuner("report", "1", "-o", "/proc/nope")
    assert reported.exit_code == 1, reported.stderr
    assert reported.stderr.startswith("error: /proc/nope"), reported.stderr
    assert len(reported.stderr.splitlines()) == 1 and "Traceback" not in reported.stderr
