"""``tuner spaces`` and ``tuner tasks``: what can be tuned, on what."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

import search_spaces
from tuner.cli._app import app, friendly
from tuner.cli._display import console
from tuner.cli._text import as_text
from tuner.task import available_tasks


@app.command(rich_help_panel="What can be tuned")
@friendly
def spaces(
    name: Annotated[str | None, typer.Argument(help="Show one search space in full.")] = None,
) -> None:
    """List the optimizers' search spaces (search_spaces/*.yaml)."""
    names = [name] if name else search_spaces.available()
    table = Table(header_style="bold")
    table.add_column("optimizer")
    table.add_column("torch.optim")
    table.add_column("parameters (LU = log-uniform, 1-x: tuned as 1 - value)")
    table.add_column("description")
    for space_name in names:
        space = search_spaces.load(space_name)
        params = "\n".join(f"{key} {spec.describe()}" for key, spec in space.params.items())
        fixed = ", ".join(f"{k}={v}" for k, v in space.fixed.items())
        cls = space.torch_class + (f"({fixed})" if fixed else "")
        table.add_row(as_text(space_name), as_text(cls), as_text(params, keep_newlines=True),
                      as_text(space.description))
    console.print(table)
    if not name:
        console.print("Override a range in a job file: [bold]space_overrides: "
                      "{adam: {lr: {low: 1.0e-4, high: 1.0e-2}}}[/]")
        console.print("Every space also takes [bold]schedule: {choices: [exponential, "
                      "warmup_cosine, constant]}[/] and [bold]warmup: {low: 0.02, high: 0.1}[/]")


@app.command(rich_help_panel="What can be tuned")
@friendly
def tasks() -> None:
    """List the tasks a job can train: built-in and installed (entry points ``tuner.tasks``)."""
    table = Table(header_style="bold")
    for column in ("task", "kind", "metrics (metric: in a job file)", "description"):
        table.add_column(column)
    for info in available_tasks():
        metrics = ", ".join(info.reports)
        # Installed tasks describe themselves: "tuner[rl]" is text, not Rich markup.
        table.add_row(as_text(info.name), as_text(info.kind), as_text(metrics),
                      as_text(info.description))
    console.print(table)
    console.print("Your own task: [bold]task: package.module:factory[/] "
                  "(a function seed -> tuner.Task; see README)")
    console.print("Your own training loop: [bold]task: package.module:train[/] "
                  "(@tuner.training_loop def train(trial); see README)")
