"""``tuner report ID``: the leaderboard, tunability and sensitivity facts, and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tuner.cli._app import JobIdArgument, ServerOption, app, friendly
from tuner.cli._display import Fitted, console, fmt, leaderboard_table
from tuner.config import get_settings
from tuner.errors import JobStateError


def _facts_table(facts: dict[str, Any], order: list[str], *, metric: str) -> Fitted:
    def make(**style: Any) -> Table:
        table = Table(title=f"tunability and sensitivity ({metric})", title_justify="left",
                      header_style="bold", **style)
        table.add_column("optimizer")
        table.add_column("expected best\nof 1 trial", justify="right")
        table.add_column("trials to 1%\nof its best", justify="right")
        table.add_column("pruned/div/\nfailed", justify="right")
        table.add_column("std across\nseeds", justify="right")
        table.add_column("std across\ntrials", justify="right")
        for name in order:
            f = facts["optimizers"].get(name)
            if f is None:
                continue
            t, s = f["tunability"], f["shares"]
            shares = "/".join("–" if s[k] is None else f"{s[k]:.0%}"
                              for k in ("share_pruned", "share_diverged", "share_failed"))
            k = t["k_within_1pct"]
            table.add_row(name, fmt(t["expected_1"]), "–" if k is None else f"{k} of {t['n']}",
                          shares, fmt(f["seeds"]["std"], 2), fmt(f["hyper"]["std"], 2))
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
    beside it. With TUNER_URL / --server, fetches the server's report instead: DIR/report.html
    with its plots inlined.
    """
    out_dir = output if output is not None else Path(f"report-{job_id}")
    if server:
        _fetch_report(server, job_id, out_dir)
        return
    from tuner import store
    from tuner.analysis.report import write_report
    from tuner.analysis.statistics import report_facts

    settings = get_settings()
    store.upgrade(settings.database_url)
    with store.session_scope(settings.database_url) as session:
        job = store.get_job(session, job_id)
        if job.state != store.JobState.SUCCEEDED or not job.result:
            raise JobStateError(f"job {job.id} is {job.state}; a report needs a succeeded job")
        spec, result = dict(job.spec), dict(job.result)
    metric, mode = spec["metric"], spec["mode"]
    rows = result.get("leaderboard") or []
    console.print(leaderboard_table(rows, metric=metric, mode=mode, title=_title(job_id, spec)))
    facts = report_facts(spec, result)
    order = [row["optimizer"] for row in rows] or list(facts["optimizers"])
    console.print(_facts_table(facts, order, metric=metric))
    for warning in facts["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    with console.status("drawing the plots"):
        files = write_report(job_id, spec, result, out_dir, storage_url=settings.database_url)
    pngs = [f for f in files if f.suffix == ".png"]
    console.print(f"report: [bold]{(out_dir / 'report.html').resolve()}[/] "
                  f"({len(pngs)} plots: {', '.join(f.name for f in pngs)})", soft_wrap=True)


def _title(job_id: int, spec: dict[str, Any]) -> str:
    return (f"job {job_id}: {spec.get('name')} on {spec.get('task')} — ranked by the mean of "
            f"{spec.get('final_seeds')} final re-runs of each optimizer's best setting "
            "(Welch's t-test vs #1, α = 0.05)")


def _fetch_report(server: str, job_id: int, out_dir: Path) -> None:
    """The server's report of a job: its leaderboard printed, report.html written."""
    from tuner.cli._service import client_for

    with client_for(server) as client:
        job = client.job(job_id)
        if job["state"] != "succeeded":
            raise JobStateError(f"job {job_id} is {job['state']}; a report needs a succeeded job")
        with console.status("fetching the report"):
            html = client.report(job_id)
        url = f"{client.url}/v1/jobs/{job_id}/report"
    spec = job.get("spec") or {}
    console.print(leaderboard_table(job.get("leaderboard") or [], metric=spec.get("metric", ""),
                                    mode=spec.get("mode", "min"), title=_title(job_id, spec)))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    plots = html.count("data:image/png;base64,")
    console.print(f"report: [bold]{path.resolve()}[/] ({plots} plots inlined; from {url})",
                  soft_wrap=True)
