"""``tuner report ID``: the leaderboard, tunability and sensitivity facts, and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tuner.cli._app import JobIdArgument, ServerOption, app, friendly, open_source
from tuner.cli._display import Fitted, console, fmt, leaderboard_table
from tuner.cli._follow import job_leaderboard, job_title
from tuner.cli._text import as_text
from tuner.errors import JobStateError

if TYPE_CHECKING:
    from tuner.views import ReportFacts


def _facts_table(facts: ReportFacts, order: list[str], *, metric: str) -> Fitted:
    def make(**style: Any) -> Table:
        table = Table(title=Text.assemble("tunability and sensitivity (", as_text(metric), ")"),
                      title_justify="left", header_style="bold", **style)
        table.add_column("optimizer")
        table.add_column("expected best\nof 1 trial", justify="right")
        table.add_column("trials to 1%\nof its best", justify="right")
        table.add_column("pruned/div/\nfailed", justify="right")
        table.add_column("std across\nseeds", justify="right")
        table.add_column("std across\ntrials", justify="right")
        for name in order:
            f = facts.optimizers.get(name)
            if f is None:
                continue
            t, s = f.tunability, f.shares
            shares = "/".join("–" if share is None else f"{share:.0%}"
                              for share in (s.share_pruned, s.share_diverged, s.share_failed))
            k = t.k_within_1pct
            table.add_row(as_text(name), fmt(t.expected_1),
                          "–" if k is None else f"{k} of {t.n}", shares,
                          fmt(f.seeds.std, 2), fmt(f.hyper.std, 2))
        return table

    return Fitted(make)


@app.command(rich_help_panel="Jobs and results")
@friendly
def report(
    job_id: JobIdArgument,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Directory for report.html and its PNGs [default: ./report-ID].",
    )] = None,
    server: ServerOption = None,
) -> None:
    """Leaderboard, statistics and plots of a succeeded job.

    Prints the leaderboard and the tunability facts, and writes DIR/report.html with the PNGs
    beside it. With TUNER_URL / --server, the server's: the same facts, and DIR/report.html
    with its plots inlined.
    """
    out_dir = output if output is not None else Path(f"report-{job_id}")
    with open_source(server) as source:
        job = source.job(job_id)
        if job["state"] != "succeeded":
            raise JobStateError(f"job {job_id} is {job['state']}; a report needs a succeeded job")
        spec = job.get("spec") or {}
        metric, mode = spec.get("metric", ""), spec.get("mode", "min")
        rows = job_leaderboard(job)
        console.print(leaderboard_table(rows, metric=metric, mode=mode,
                                        title=_title(job_id, job, spec)))
        facts = source.report_facts(job_id)
        if facts is not None:
            order = [row.optimizer for row in rows] or list(facts.optimizers)
            console.print(_facts_table(facts, order, metric=metric))
            for warning in facts.warnings:
                console.print(Text.assemble(("warning:", "yellow"), " ", as_text(warning)),
                              soft_wrap=True)
        with console.status("writing the report (drawing its plots)"):
            written = source.write_report(job_id, out_dir)
    console.print(Text.assemble("report: ", as_text(written.path.resolve(), "bold"), " (",
                                as_text(written.note), ")"), soft_wrap=True)


def _title(job_id: int, job: dict[str, Any], spec: dict[str, Any]) -> Text:
    return job_title(job_id, job["name"], job["task"],
                     f" — ranked by the mean of {spec.get('final_seeds')} final re-runs of "
                     "each optimizer's best setting (Welch's t-test vs #1, α = 0.05)")
