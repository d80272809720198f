"""Rich rendering shared by the commands: progress bars, the leaderboard, job tables.

User text (names, tasks, optimizers, metrics, paths, errors) reaches Rich as
:class:`rich.text.Text` (:func:`tuner.cli._text.as_text`), so whatever console draws it reads
no markup or emoji code in it; markup is for our own strings, and the CLI's consoles read no
emoji codes at all (``:train:`` stays text).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text, TextType

from tuner.cli._text import as_text, printable
from tuner.results import JobProgress, LeaderboardRow

#: The consoles of the commands: markup for our own strings, never an emoji code.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value)


class JobBars:
    """One bar per optimizer: trials finished of the budget, pruned/diverged, best so far.

    The bar gives way to the counts in a narrow terminal (80 columns), so no count is cut.
    """

    def __init__(self, optimizers: Sequence[str], budget: int, metric: str, *,
                 out: Console | None = None) -> None:
        self.metric = metric
        self.bar = BarColumn(bar_width=28)
        self.progress = Progress(
            # The optimizer's name is text: no markup read in it.
            TextColumn("{task.description:<10}", style="bold", markup=False),
            self.bar,
            MofNCompleteColumn(),
            _DetailColumn(),
            TimeElapsedColumn(),
            console=out or console,
            transient=False,
        )
        self.tasks = {
            name: self.progress.add_task(printable(name), total=budget,
                                         detail=Text("waiting"))
            for name in optimizers
        }

    def __enter__(self) -> JobBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, snapshot: JobProgress) -> None:
        width = self.progress.console.width
        # The metric's name repeats on every line: said only where there is room for it;
        # narrow, the counts take the leaderboard's short names (ok/pr/div/fail).
        wide = width >= 110
        best = Text.assemble("best ", as_text(self.metric)) if wide else Text("best")
        pruned, diverged, failed = ("pruned", "diverged", "failed") if wide else (
            "pr", "div", "fail")
        details: dict[str, Text] = {}
        for name, p in snapshot.optimizers.items():
            parts = [Text(f"{p.complete} ok", "green")]
            if p.pruned:
                parts.append(Text(f"{p.pruned} {pruned}", "yellow"))
            if p.diverged:
                parts.append(Text(f"{p.diverged} {diverged}", "red"))
            if p.failed:
                parts.append(Text(f"{p.failed} {failed}", "red"))
            if p.lost:
                parts.append(Text(f"{p.lost} re-run", "magenta"))
            if p.best is not None:
                parts.append(Text.assemble(best, " ", (fmt(p.best), "bold")))
            if p.final_total:
                parts.append(Text(f"final {p.final_done}/{p.final_total}"))
            details[name] = Text(" · ").join(parts)
        longest = max((d.cell_len for d in details.values()), default=0)
        # name 10, counts 5 ("20/20"), elapsed 7, four gaps: the bar takes what is left.
        counts = max(len(f"{p.finished}/{p.budget}") for p in snapshot.optimizers.values()) \
            if snapshot.optimizers else 5
        self.bar.bar_width = max(6, min(28, width - 10 - counts - 7 - 4 - longest))
        for name, p in snapshot.optimizers.items():
            self.progress.update(
                self.tasks[name], completed=p.finished, total=p.budget, detail=details[name],
            )


class _DetailColumn(ProgressColumn):
    """An optimizer's counts and best value: a :class:`Text` built by :class:`JobBars`
    (the metric's name is the user's text: never read as markup or emoji codes)."""

    def render(self, task: Task) -> Text:
        detail = task.fields.get("detail")
        return detail if isinstance(detail, Text) else Text(str(detail or ""))


@dataclass(frozen=True)
class _Column:
    """One leaderboard column: its header, how a row fills it, and its alignment."""

    header: TextType
    cell: Callable[[LeaderboardRow], TextType]
    justify: JustifyMethod = "right"


class Leaderboard:
    """The leaderboard, laid out for the width it is drawn at.

    Wide enough (about 130 columns), it is the full boxed table: rank, optimizer, final mean
    ± std with the number of runs, the 95% confidence interval, Welch's t-test against the
    leader, the best trial, its learning rate and batch size, the trial counts and the epoch
    at the target. Narrower, it keeps what decides between optimizers (rank, optimizer, mean
    ± std, CI, verdict with p, best lr and batch) on one line per row and adds the other
    columns as they fit; nothing is cut. ``wide=True`` always draws the full table
    (``tuner status --wide``); the report has every column too.

    ``rows``: :class:`~tuner.results.LeaderboardRow` objects, or their stored form (a job's
    ``leaderboard`` as the API answers it), read into them.

    Example:
        >>> console.print(Leaderboard(rows, metric="val_loss", mode="min", title="job 3"))
    """

    def __init__(self, rows: Sequence[LeaderboardRow | Mapping[str, Any]], *, metric: str,
                 mode: str, title: TextType, wide: bool = False) -> None:
        self.rows = [row if isinstance(row, LeaderboardRow) else LeaderboardRow.from_dict(row)
                     for row in rows]
        self.metric = metric
        self.mode = mode
        self.title = title
        self.wide = wide

    def __rich_console__(self, console: Console,
                         options: ConsoleOptions) -> Iterator[RenderableType]:
        yield self.table(console, options)

    def print(self, console: Console) -> None:
        """Print it; ``wide`` and written to a file or a pipe, at its natural width."""
        if self.wide and not console.is_terminal:
            options = console.options
            natural = _natural_width(console, options, self.table(console, options))
            # Console.print caps a width at the console's: a console of that width, then.
            Console(file=console.file, width=max(natural, options.max_width),
                    emoji=False).print(self)
        else:
            console.print(self)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(console, options))

    def table(self, console: Console, options: ConsoleOptions) -> Table:
        """The widest layout whose natural width fits ``options.max_width``."""
        full = self._table(self._columns(), boxed=True)
        if self.wide or _natural_width(console, options, full) <= options.max_width:
            return full
        # The optional columns join in the order a reader asks for them, as long as they fit.
        optional = ["best trial", "trials", "target"]
        for keep in range(len(optional), -1, -1):
            table = self._table(self._columns(compact=set(optional[keep:])), boxed=False)
            if _natural_width(console, options, table) <= options.max_width:
                return table
        return table  # narrower than the compact layout: Rich wraps the cells, never cuts

    # -- columns ---------------------------------------------------------------------------

    def _columns(self, compact: set[str] | None = None) -> list[_Column]:
        """Every column (``compact=None``: the boxed table's headers), or the compact
        layout's without the optional columns named in ``compact``."""
        arrow = "↓" if self.mode == "min" else "↑"
        if compact is None:
            score = _Column(Text.assemble("final ", as_text(self.metric),
                                          f" {arrow}\nmean ± std (runs)"), _score)
        else:
            # The usual number of runs is said once, in the header; a row that differs (a
            # final re-run failed) says its own, ``(3/5)``.
            counts = Counter(_runs(row) for row in self.rows if row.mean is not None)
            usual = counts.most_common(1)[0][0] if counts else ""
            runs = f" ({usual} runs)" if usual.isdigit() else ""
            score = _Column(Text.assemble(as_text(self.metric), f" {arrow}\nmean ± std{runs}"),
                            lambda row: _score(row, runs=_runs(row) != usual))
        dropped = compact or set()
        columns = [
            _Column("#", lambda row: str(row.rank)),
            _Column("optimizer", lambda row: as_text(row.optimizer), "left"),
            score,
            _Column("95% CI\n±", lambda row: fmt(row.ci95, 2)),
            _Column("vs #1\nWelch, Holm", _verdict, "left"),
        ]
        if "best trial" not in dropped:
            columns.append(_Column("best trial" if compact is None else "best\ntrial",
                                   _best_trial))
        # Without the best-trial column, "best" says whose learning rate this is.
        lr = "best\nlr" if "best trial" in dropped else "lr"
        columns += [_Column(lr, lambda row: fmt(row.lr, 2)),
                    _Column("batch", lambda row: fmt(row.batch_size))]
        if "trials" not in dropped:
            columns.append(_Column("trials ok/\npr/div/fail", _counts))
        if self._has_target() and "target" not in dropped:
            columns.append(_Column("epoch at\ntarget", _target))
        return columns

    def _has_target(self) -> bool:
        # A job with a target says in every row how many final runs reached it.
        return any(row.target_reached is not None for row in self.rows)

    def _table(self, columns: Sequence[_Column], *, boxed: bool) -> Table:
        if boxed:
            table = Table(title=self.title, title_justify="left", header_style="bold")
        else:
            # No vertical rules: three characters a column that a narrow terminal needs.
            table = Table(title=self.title, title_justify="left", header_style="bold",
                          box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in columns:
            table.add_column(column.header, justify=column.justify, overflow="fold")
        for row in self.rows:
            table.add_row(*(column.cell(row) for column in columns))
        return table


class Fitted:
    """A table drawn boxed where it fits, else without its vertical rules (three columns of
    the terminal a column), its cells folded rather than cut.

    Args:
        make: Builds the table; called with ``box=None`` for the light form.
    """

    def __init__(self, make: Callable[..., Table]) -> None:
        self.make = make

    def __rich_console__(self, console: Console,
                         options: ConsoleOptions) -> Iterator[RenderableType]:
        table = self.make()
        if _natural_width(console, options, table) > options.max_width:
            table = self.make(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in table.columns:
            column.overflow = "fold"
        yield table


def leaderboard_table(rows: Sequence[LeaderboardRow | Mapping[str, Any]], *, metric: str,
                      mode: str, title: TextType, wide: bool = False) -> Leaderboard:
    """The leaderboard of a job's rows (typed, or as stored): a :class:`Leaderboard`."""
    return Leaderboard(rows, metric=metric, mode=mode, title=title, wide=wide)


def _natural_width(console: Console, options: ConsoleOptions, table: Table) -> int:
    """The width a table takes when nothing in it wraps (its title may)."""
    title, table.title = table.title, None
    try:
        return Measurement.get(console, options.update(width=10_000), table).maximum
    finally:
        table.title = title


def _runs(row: LeaderboardRow) -> str:
    failed = row.finals_failed or 0
    return f"{row.seeds}" if not failed else f"{row.seeds}/{row.seeds + failed}"


def _score(row: LeaderboardRow, *, runs: bool = True) -> str:
    if row.mean is None:
        return "–"
    score = f"{fmt(row.mean)} ± {fmt(row.std, 2)}"
    return f"{score} ({_runs(row)})" if runs else score


def _verdict(row: LeaderboardRow) -> str:
    p = row.p_vs_leader
    if row.rank == 1:
        return "[bold green]leader[/]"
    if p is None:
        return "–"
    if row.tied_with_leader:
        return f"[cyan]tied[/] p={p:.2f}"
    return f"worse p={p:.2g}"


def _best_trial(row: LeaderboardRow) -> str:
    if row.best is None:
        return "–"
    return f"{fmt(row.best)} (#{row.trial})"


def _counts(row: LeaderboardRow) -> str:
    return f"{row.complete}/{row.pruned}/{row.diverged}/{row.failed}"


def _target(row: LeaderboardRow) -> str:
    return f"{fmt(row.target_epoch)} ({row.target_reached or ''})"


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> Table:
    """The jobs as ``tuner jobs`` lists them (the API's list form), user text as text; in a
    narrow terminal a long name or task wraps, never cut."""
    table = Table(header_style="bold")
    for column in ("id", "name", "task", "state", "optimizers", "created", "took"):
        table.add_column(column, overflow="fold")
    colors = {"succeeded": "green", "failed": "red", "running": "cyan", "queued": "yellow",
              "cancelled": "magenta"}
    for job in jobs:
        took = "–"
        if job.get("started_at") and job.get("finished_at"):
            seconds = (datetime.fromisoformat(job["finished_at"])
                       - datetime.fromisoformat(job["started_at"])).total_seconds()
            took = f"{seconds:.0f}s"
        state = job["state"]
        table.add_row(
            str(job["id"]), as_text(job["name"]), as_text(job["task"]),
            as_text(state, colors.get(state, "white")),
            as_text(", ".join(job.get("optimizers") or [])),
            (job.get("created_at") or "")[:19].replace("T", " "), took,
        )
    return table
