"""The leaderboard as a person sees it: laid out for 80, 120 and 140 columns, nothing cut."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from tuner.cli._display import Leaderboard


def _row(rank: int, name: str, mean: float, std: float, ci: float, p: float | None,
         tied: bool | None, best: float, trial: int, lr: float, batch: int,
         counts: tuple[int, int, int, int], target: tuple[int | None, str],
         seeds: int = 5, failed: int = 0) -> dict:
    return {"rank": rank, "optimizer": name, "mean": mean, "std": std, "ci95": ci,
            "seeds": seeds, "finals_failed": failed, "p_vs_leader": p, "tied_with_leader": tied,
            "best": best, "trial": trial, "lr": lr, "batch_size": batch,
            "complete": counts[0], "pruned": counts[1], "diverged": counts[2],
            "failed": counts[3], "target_epoch": target[0], "target_reached": target[1]}


# The demo's leaderboard (README).
DEMO = [
    _row(1, "sgd", 0.97389, 0.0054, 0.0067, None, None, 0.975, 15, 0.2701, 8, (12, 8, 0, 0),
         (3, "5/5")),
    _row(2, "minibatch", 0.97278, 0.0023, 0.0029, 0.69, True, 0.97222, 3, 0.82, 32,
         (14, 6, 0, 0), (3, "5/5")),
    _row(3, "rmsprop", 0.97, 0.01, 0.013, 0.48, True, 0.975, 0, 0.01, 64, (8, 12, 0, 0),
         (6, "5/5")),
    _row(4, "nag", 0.9694, 0.0034, 0.0042, 0.17, True, 0.975, 1, 0.016, 32, (9, 11, 0, 0),
         (6, "5/5")),
    _row(5, "momentum", 0.9689, 0.0036, 0.0045, 0.13, True, 0.975, 1, 0.016, 32,
         (8, 12, 0, 0), (6, "5/5")),
    _row(6, "adam", 0.96, 0.021, 0.026, 0.21, True, 0.98333, 15, 0.035, 64, (15, 5, 0, 0),
         (4, "5/5")),
    _row(7, "gd", 0.9022, 0.01, 0.013, 9.8e-05, False, 0.9028, 15, 1.3, 1437, (12, 8, 0, 0),
         (None, "0/5")),
]
TITLE = ("job 1: demo-digits on digits-mlp — ranked by the mean of 5 final re-runs of each "
         "optimizer's best setting")


def render(rows: list[dict], width: int, *, wide: bool = False) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    Leaderboard(rows, metric="val_accuracy", mode="max", title=TITLE, wide=wide).print(console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


def body(lines: list[str]) -> list[str]:
    """The lines below the header rule."""
    rule = next(i for i, line in enumerate(lines) if set(line) <= set("─━┡╇┩ "))
    return [line for line in lines[rule + 1:] if line and not line.startswith("└")]


def test_at_80_columns_each_optimizer_is_one_line_and_nothing_is_cut() -> None:
    lines = render(DEMO, 80)

    assert all(len(line) <= 80 for line in lines)
    assert not any("…" in line for line in lines)
    rows = body(lines)
    assert len(rows) == 7  # one line each
    assert re.fullmatch(
        r"1 +sgd +0\.9739 ± 0\.0054 +0\.0067 +leader +0\.27 +8", rows[0]), rows[0]
    assert re.fullmatch(
        r"2 +minibatch +0\.9728 ± 0\.0023 +0\.0029 +tied p=0\.69 +0\.82 +32", rows[1])
    assert re.fullmatch(
        r"7 +gd +0\.9022 ± 0\.01 +0\.013 +worse p=9\.8e-05 +1\.3 +1437", rows[6])
    header = lines[2:lines.index(next(line for line in lines if line.startswith("─")))]
    assert len(header) == 2
    assert "mean ± std (5 runs)" in header[1] and "val_accuracy ↑" in header[0]


def test_at_120_columns_the_optional_columns_join() -> None:
    lines = render(DEMO, 120)

    assert all(len(line) <= 120 for line in lines)
    assert not any("…" in line for line in lines)
    rows = body(lines)
    assert len(rows) == 7
    assert re.fullmatch(r"1 +sgd +0\.9739 ± 0\.0054 +0\.0067 +leader +0\.975 \(#15\) +0\.27 "
                        r"+8 +12/8/0/0 +3 \(5/5\)", rows[0]), rows[0]


def test_a_wide_terminal_gets_the_boxed_table() -> None:
    lines = render(DEMO, 140)

    assert lines[1].startswith("┏━━━┳")
    assert any("│ 1 │ sgd       │  0.9739 ± 0.0054 (5) │ 0.0067 │ leader          │  0.975 (#15) │"
               in line for line in lines)
    assert any("best trial" in line for line in lines)


def test_wide_written_to_a_file_keeps_every_column_at_its_natural_width() -> None:
    lines = render(DEMO, 80, wide=True)

    assert lines[1].startswith("┏━━━┳") and len(lines[1]) > 100
    assert any("│ 7 │ gd        │    0.9022 ± 0.01 (5) │  0.013 │ worse p=9.8e-05 │" in line
               for line in lines)


@pytest.mark.parametrize("width", [80, 100])
def test_long_names_and_failed_finals_wrap_to_two_lines_at_most(width: int) -> None:
    rows = [dict(row) for row in DEMO]
    rows[1]["optimizer"] = "adamw-amsgrad"
    rows[2].update(seeds=3, finals_failed=2)
    rows[5].update(mean=1.2345e-05, std=3.4e-06, lr=1.234e-05)
    rows[6]["p_vs_leader"] = 1.234e-10

    lines = render(rows, width)

    assert all(len(line) <= width for line in lines)
    assert not any("…" in line for line in lines)
    text = "\n".join(lines)
    for token in ("adamw-amsgrad", "(3/5)", "1.23e-05", "3.40e-06", "p=1.2e-10"):
        assert token in text, token
    starts = [i for i, line in enumerate(body(lines)) if re.match(r"\d ", line)]
    assert len(starts) == 7
    heights = [b - a for a, b in zip(starts, [*starts[1:], len(body(lines))], strict=True)]
    assert max(heights) <= 2, heights


def test_progress_bars_give_way_to_the_counts_at_80_columns() -> None:
    from tuner.cli._display import JobBars
    from tuner.results import JobProgress, OptimizerProgress

    snapshot = JobProgress(job_id=1, metric="val_accuracy", mode="max", phase="finals")
    for name in ("gd", "minibatch"):
        snapshot.optimizers[name] = OptimizerProgress(
            name=name, budget=20, complete=12, pruned=7, diverged=1, best=0.90277,
            final_done=5, final_total=5)
    for width, counts in ((80, "12 ok · 7 pr · 1 div · best 0.9028"),
                          (140, "12 ok · 7 pruned · 1 diverged · best val_accuracy 0.9028")):
        out = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=True)
        bars = JobBars(list(snapshot.optimizers), 20, "val_accuracy", out=out)
        bars.update(snapshot)
        out.print(bars.progress.make_tasks_table(bars.progress.tasks))
        lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]

        assert len(lines) == 2 and all(len(line) <= width for line in lines), lines
        assert not any("…" in line for line in lines), lines
        assert f"20/20 {counts} · final 5/5" in lines[1], lines


def test_user_text_in_the_leaderboard_at_80_columns_is_text() -> None:
    """A job named ``a:train:`` on ``mypkg.loop:train``, a metric ``acc:train:`` (a training
    loop names its own), an optimizer name with a zero-width space and one with brackets:
    printed as written (no emoji, no markup), the invisible character escaped, on any
    console (this one reads emoji codes)."""
    from tuner.cli._follow import job_title

    rows = [dict(row) for row in DEMO]
    rows[0]["optimizer"] = "sgd:train:"
    rows[1]["optimizer"] = "mini\u200bbatch"
    rows[2]["optimizer"] = "[bold]rms[/]"
    console = Console(file=io.StringIO(), width=80, color_system=None)
    title = job_title(1, "a:train:", "mypkg.loop:train", " — ranked by the mean of 5 final "
                      "re-runs of each optimizer's best setting")
    Leaderboard(rows, metric="acc:train:", mode="max", title=title).print(console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    lines = [line.rstrip() for line in text.splitlines()]
    assert any("acc:train: ↑" in line for line in lines), text

    assert all(len(line) <= 80 for line in lines)
    assert "🚋" not in text and "\u200b" not in text
    assert lines[0].startswith("job 1: a:train: on mypkg.loop:train — ranked by"), lines[0]
    rows_shown = body(lines)
    assert re.match(r"1 +sgd:train: +0\.9739 ± 0\.0054 ", rows_shown[0]), rows_shown[0]
    assert re.match(r"2 +mini\\u200bbatch +0\.9728 ", rows_shown[1]), rows_shown[1]
    assert re.match(r"3 +\[bold\]rms\[/\] +0\.97 ", rows_shown[2]), rows_shown[2]


def test_progress_bars_show_optimizer_and_metric_names_as_text() -> None:
    from tuner.cli._display import JobBars
    from tuner.results import JobProgress, OptimizerProgress

    metric = "[bold]val:train:[/]"  # a training loop names its own metrics
    snapshot = JobProgress(job_id=1, metric=metric, mode="max", phase="search")
    snapshot.optimizers["sgd:train:"] = OptimizerProgress(
        name="sgd:train:", budget=20, complete=3, best=0.5)
    snapshot.optimizers["zw\u200bsgd"] = OptimizerProgress(name="zw\u200bsgd", budget=20,
                                                          complete=2, best=0.25)
    out = Console(file=io.StringIO(), width=140, color_system=None, force_terminal=True)
    bars = JobBars(list(snapshot.optimizers), 20, metric, out=out)
    bars.update(snapshot)
    out.print(bars.progress.make_tasks_table(bars.progress.tasks))
    text = out.file.getvalue()  # type: ignore[attr-defined]

    assert "🚋" not in text and "\u200b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("sgd:train: ") and "best [bold]val:train:[/] 0.5" in lines[0]
    assert lines[1].startswith("zw\\u200bsgd ")
