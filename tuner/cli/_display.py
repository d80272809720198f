"""Rich rendering shared by the commands: progress bars, the leaderboard, job tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.results import JobProgress

console = Console()
err_console = Console(stderr=True)


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
    """One bar per optimizer: trials finished of the budget, pruned/diverged, best so far."""

    def __init__(self, optimizers: Sequence[str], budget: int, metric: str) -> None:
        self.metric = metric
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks = {
            name: self.progress.add_task(name, total=budget, detail="waiting")
            for name in optimizers
        }

    def __enter__(self) -> JobBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, snapshot: JobProgress) -> None:
        for name, p in snapshot.optimizers.items():
            parts = [f"[green]{p.complete} ok[/]"]
            if p.pruned:
                parts.append(f"[yellow]{p.pruned} pruned[/]")
            if p.diverged:
                parts.append(f"[red]{p.diverged} diverged[/]")
            if p.failed:
                parts.append(f"[red]{p.failed} failed[/]")
            if p.lost:
                parts.append(f"[magenta]{p.lost} re-run[/]")
            if p.best is not None:
                parts.append(f"best {self.metric} [bold]{fmt(p.best)}[/]")
            if p.final_total:
                parts.append(f"final {p.final_done}/{p.final_total}")
            self.progress.update(
                self.tasks[name], completed=p.finished, total=p.budget,
                detail=" · ".join(parts),
            )


def leaderboard_table(rows: Sequence[Mapping[str, Any]], *, metric: str, mode: str,
                      title: str) -> Table:
    arrow = "↓" if mode == "min" else "↑"
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("optimizer")
    table.add_column(f"final {metric} {arrow}\nmean ± std (runs)", justify="right")
    table.add_column("95% CI\n±", justify="right")
    table.add_column("vs #1\nWelch t", justify="left")
    table.add_column("best trial", justify="right")
    table.add_column("lr", justify="right")
    table.add_column("batch", justify="right")
    table.add_column("trials ok/\npr/div/fail", justify="right")
    show_target = any("target_epoch" in row for row in rows)
    if show_target:
        table.add_column("epoch at\ntarget", justify="right")
    for row in rows:
        if row.get("mean") is not None:
            failed = row.get("finals_failed") or 0
            runs = f"{row['seeds']}" if not failed else f"{row['seeds']}/{row['seeds'] + failed}"
            score = f"{fmt(row['mean'])} ± {fmt(row['std'], 2)} ({runs})"
        else:
            score = "–"
        p = row.get("p_vs_leader")
        if row["rank"] == 1:
            verdict = "[bold green]leader[/]"
        elif p is None:
            verdict = "–"
        elif row.get("tied_with_leader"):
            verdict = f"[cyan]tied[/] p={p:.2f}"
        else:
            verdict = f"worse p={p:.2g}"
        cells = [
            str(row["rank"]), row["optimizer"], score, fmt(row.get("ci95"), 2), verdict,
            f"{fmt(row['best'])} (#{row['trial']})" if row.get("best") is not None else "–",
            fmt(row.get("lr"), 2), fmt(row.get("batch_size")),
            f"{row['complete']}/{row['pruned']}/{row['diverged']}/{row['failed']}",
        ]
        if show_target:
            cells.append(f"{fmt(row.get('target_epoch'))} ({row.get('target_reached', '')})")
        table.add_row(*cells)
    return table


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(header_style="bold")
    for column in ("id", "name", "task", "state", "optimizers", "created", "took"):
        table.add_column(column)
    colors = {"succeeded": "green", "failed": "red", "running": "cyan", "queued": "yellow",
              "cancelled": "magenta"}
    for job in jobs:
        took = "–"
        if job.get("started_at") and job.get("finished_at"):
            from datetime import datetime

            seconds = (datetime.fromisoformat(job["finished_at"])
                       - datetime.fromisoformat(job["started_at"])).total_seconds()
            took = f"{seconds:.0f}s"
        state = job["state"]
        table.add_row(
            str(job["id"]), escape(job["name"]), escape(job["task"]),
            f"[{colors.get(state, 'white')}]{state}[/]",
            ", ".join(job.get("optimizers") or []),
            (job.get("created_at") or "")[:19].replace("T", " "), took,
        )
    return table
