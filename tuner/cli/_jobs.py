"""``tuner run``, ``demo``, ``resume``, ``ui`` on the local store; ``jobs``, ``status``,
``export`` on the jobs source (:mod:`tuner.cli._source`): the local store or, with
``TUNER_URL`` / ``--server``, the tuner server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.text import Text

from tuner.analysis.export import FORMATS, render_export
from tuner.cli._app import JobIdArgument, ServerOption, app, friendly, open_source
from tuner.cli._display import JobBars, console, err_console, fmt, jobs_table, leaderboard_table
from tuner.cli._follow import follow_job, job_leaderboard, job_progress, job_title
from tuner.cli._text import as_text
from tuner.config import Settings, get_settings
from tuner.errors import JobCancelled, SpecError, TaskError, TunerError
from tuner.results import TrialOutcome
from tuner.spec import CLASSIC_OPTIMIZERS, JobSpec, load_job_file, parse_job
from tuner.task import is_module_path, resolve_task

#: A job's states (``tuner.store.JobState``, not imported for start-up): ``--state`` takes one,
#: checked here alike for the local store and a server.
JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]

#: The demo: the seven classic optimizers on the digits, a few minutes on 2 CPU cores.
DEMO_JOB: dict[str, Any] = {
    "name": "demo-digits",
    "task": "digits-mlp",
    "optimizers": list(CLASSIC_OPTIMIZERS),
    "trials": 20,
    "epochs": 20,
    "metric": "val_accuracy",
    "mode": "max",
    "sampler": "tpe",
    "pruner": "median",
    "seed": 0,
    "final_seeds": 5,
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    "max_concurrent": 2,
    # Seven studies on two workers: asking each study's next trial only after its last one
    # was told costs no throughput here, and makes the demo's trials the same every run.
    "reproducible": True,
    "target": 0.95,
}


def _execute(spec: JobSpec, settings: Settings) -> int:
    """Record the job, run it with progress bars, print the leaderboard and where things are."""
    from tuner.engine.jobs import create_local_job

    job_id = create_local_job(settings, spec, start_ray=True)
    _run_and_show(settings, job_id, spec)
    return job_id


def _run_and_show(settings: Settings, job_id: int, spec: JobSpec) -> None:
    from tuner.engine.jobs import cancel_check, export_path, report_dir, run_job
    from tuner.tracking import experiment_link, has_leaderboard_view, ui_base

    console.print(Text.assemble(
        (f"job {job_id}", "bold"), " ", as_text(spec.name),
        f": {len(spec.optimizers)} optimizers × {spec.trials} trials × {spec.epochs} epochs on ",
        as_text(spec.task, "bold"), " (", as_text(spec.metric),
        f", {spec.mode}; sampler {spec.sampler}, pruner {spec.pruner})",
    ))
    try:
        with JobBars(spec.optimizers, spec.trials, spec.metric) as bars:
            # `tuner cancel ID` from another terminal stops it too.
            outcome = run_job(settings, job_id, spec, on_progress=bars.update,
                              should_cancel=cancel_check(settings.database_url, job_id))
    except JobCancelled:
        err_console.print(f"job {job_id} cancelled: its started trials ended as "
                          f"{TrialOutcome.FAIL}; "
                          "the finished ones are kept")
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        err_console.print(f"job {job_id} cancelled (Ctrl-C)")
        raise typer.Exit(code=130) from None
    console.print()
    console.print(leaderboard_table(
        outcome.leaderboard, metric=spec.metric, mode=spec.mode,
        title=job_title(job_id, spec.name, spec.task,
                        f" — ranked by the mean of {spec.final_seeds} final re-runs of each "
                        "optimizer's best setting"),
    ))
    best = outcome.export.get("best")
    console.print(Text.assemble("best optimizer: ", as_text(best, "bold green"),
                                f"  ({outcome.seconds:.0f} s)"))
    # Paths and links are not broken at 80 columns: the terminal wraps them, whole.
    console.print(Text.assemble("export:  ", as_text(export_path(settings, job_id).resolve()),
                                "  (tuner.load_optimizer(path, model.parameters()))"),
                  soft_wrap=True)
    report = report_dir(settings, job_id) / "report.html"
    if report.exists():
        console.print(Text.assemble("report:  ", as_text(report.resolve()),
                                    f"  (tuner report {job_id})"), soft_wrap=True)
    link = experiment_link(ui_base(settings.tracking_uri), outcome.experiment_id,
                           leaderboard=has_leaderboard_view(settings.tracking_uri,
                                                            outcome.experiment_id))
    console.print(Text.assemble(f"MLflow:  tuner ui {job_id}   → ", as_text(link)),
                  soft_wrap=True)


@app.command(rich_help_panel="Tune")
@friendly
def run(
    job_file: Annotated[Path, typer.Argument(help="The job file (YAML).")],
) -> None:
    """Run a tuning job in this process on a local Ray (or RAY_ADDRESS's cluster)."""
    spec = load_job_file(job_file)
    _check_task_imports(spec, source=str(job_file))
    _execute(spec, get_settings())


def _check_task_imports(spec: JobSpec, *, source: str) -> None:
    """A local run imports a ``package.module:factory`` task here first: a typo is refused
    before anything is stored, not found later by a worker."""
    if is_module_path(spec.task):
        try:
            resolve_task(spec.task)
        except TaskError as e:
            raise SpecError([f"task: {e}"], source=source) from None


@app.command(rich_help_panel="Tune")
@friendly
def demo(
    trials: Annotated[int, typer.Option(help="Trials per optimizer.")] = DEMO_JOB["trials"],
    epochs: Annotated[int, typer.Option(help="Epochs per trial.")] = DEMO_JOB["epochs"],
) -> None:
    """The seven classic optimizers compared on the digits, in about a minute.

    GD, SGD, mini-batch, Momentum, Nesterov, RMSprop and Adam: tuning, final re-runs,
    leaderboard, export, report and MLflow, on the embedded store.
    """
    spec = parse_job({**DEMO_JOB, "trials": trials, "epochs": epochs}, source="demo")
    _execute(spec, get_settings())


@app.command(rich_help_panel="Tune")
@friendly
def resume(
    job_id: Annotated[int, typer.Argument(min=1, max=2**31 - 1,
                                          help="The job whose process died.")],
    force: Annotated[bool, typer.Option(help="Do not wait for its heartbeat to go stale.")]
    = False,
) -> None:
    """Resume a job whose process died (killed, crashed, power lost).

    Its finished trials count; its running trials are recorded as failed and run again; each
    optimizer ends with exactly its budget.
    """
    # Only this machine's store: a server requeues the jobs its dead process left.
    from tuner.cli._local import LocalJobs

    settings = get_settings()
    document = LocalJobs(settings.database_url).take_over(job_id, force=force)
    spec = parse_job(document, source=f"job {job_id}")
    _run_and_show(settings, job_id, spec)


@app.command(rich_help_panel="Jobs and results")
@friendly
def jobs(
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    state: Annotated[JobStateName | None, typer.Option(
        help="Only jobs in this state.", show_default=False)] = None,
    server: ServerOption = None,
) -> None:
    """List the jobs of this store, or of the server at TUNER_URL / --server."""
    with open_source(server) as source:
        page = source.jobs(limit=limit, state=state)
    rows, total = page["items"], page["total"]
    if not rows:
        console.print("no jobs yet: try [bold]tuner demo[/] or [bold]tuner run JOB.yaml[/]")
        return
    console.print(jobs_table(rows))
    if total > len(rows):
        console.print(f"{len(rows)} of {total} jobs; --limit {total} shows all")


@app.command(rich_help_panel="Jobs and results")
@friendly
def status(
    job_id: JobIdArgument,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Follow the job with progress bars until it ends.")] = False,
    wide: Annotated[bool, typer.Option(
        "--wide", help="Every leaderboard column, however wide the terminal.")] = False,
    server: ServerOption = None,
) -> None:
    """Show a job: its state, per-optimizer progress, and its leaderboard once done.

    The leaderboard fits the terminal: at 80 columns, rank, optimizer, mean ± std, CI,
    verdict and the best learning rate and batch size; --wide (or a wide terminal) adds the
    best trial, the trial counts and the epoch at the target.
    """
    with open_source(server) as source:
        if watch:
            follow_job(source, job_id)
            return
        view = source.job(job_id)
    console.print(Text.assemble((f"job {view['id']}", "bold"), " ", as_text(view["name"]),
                                " on ", as_text(view["task"]), ": ",
                                as_text(view["state"], "bold")))
    if view.get("cancel_requested") and view["state"] in ("queued", "running"):
        console.print("[magenta]cancel requested[/]")
    if view.get("error"):
        console.print(Text.assemble(("error:", "red"), " ",
                                    as_text(view["error"], keep_newlines=True)))
    for name, p in job_progress(view).optimizers.items():
        # Counts that are zero are left out: a line fits 80 columns.
        counts = [f"ok {p.complete}"] + [
            f"{label} {count}" for label, count in
            (("pruned", p.pruned), ("diverged", p.diverged), ("failed", p.failed),
             ("running", p.running)) if count
        ]
        line = as_text(name)
        line.pad_right(10 - line.cell_len)
        console.print(Text.assemble(
            "  ", line, f" {p.finished}/{p.budget + p.lost} trials  "
            f"{' · '.join(counts)} · best {fmt(p.best)}"))
    board = job_leaderboard(view)
    if board:
        spec = view["spec"]
        leaderboard_table(
            board, metric=spec["metric"], mode=spec["mode"], wide=wide,
            title=f"leaderboard: ranked by the mean of {spec.get('final_seeds')} final "
                  "re-runs of each optimizer's best setting",
        ).print(console)


@app.command(rich_help_panel="Jobs and results")
@friendly
def export(
    job_id: JobIdArgument,
    format: Annotated[str, typer.Option("--format", "-f",
                                        help="yaml, json or python.")] = "yaml",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to this file.")] = None,
    server: ServerOption = None,
) -> None:
    """The best configuration of each optimizer, ready for torch.optim."""
    if format not in FORMATS:
        raise TunerError(f"--format: unknown format {format!r}; allowed: {', '.join(FORMATS)}")
    with open_source(server) as source:
        document = source.export(job_id)
    text = render_export(document, format)
    if output is None:
        sys.stdout.write(text)
        return
    _write_output(output, text)
    console.print(Text.assemble("wrote ", as_text(output)))


def _write_output(output: Path, text: str) -> None:
    """Write ``text`` to ``output`` (its folders created), or one line saying why not."""
    blocker = next((p for p in output.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise TunerError(f"--output: cannot write {output}: {blocker} is a file, not a folder")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as e:
        raise TunerError(f"--output: cannot write {output}: {e.strerror or e}") from None


@app.command(rich_help_panel="Jobs and results")
@friendly
def ui(
    job_id: Annotated[
        int | None, typer.Argument(min=1, max=2**31 - 1,
                                   help="The job to open (default: the latest).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    print_only: Annotated[bool, typer.Option("--print-link",
                                             help="Only print the link.")] = False,
) -> None:
    """Open the MLflow UI on the configured tracking store, at the job's Runs table.

    A succeeded job opens on its leaderboard view: the job run and every optimizer run first,
    in rank order, with their final mean, std and best value as columns.
    """
    from tuner.cli._local import local_job
    from tuner.tracking import experiment_link, has_leaderboard_view, ui_base

    settings = get_settings()
    uri = settings.tracking_uri
    remote = uri.startswith(("http://", "https://"))
    base = ui_base(uri, host=host, port=port)
    experiment_id = None
    try:
        experiment_id = local_job(job_id)["mlflow_experiment_id"]
    except TunerError:
        if job_id is not None:
            raise
    link = base
    if experiment_id:
        link = experiment_link(base, experiment_id,
                               leaderboard=has_leaderboard_view(uri, experiment_id))
    console.print(Text.assemble("MLflow UI: ", as_text(link, "bold")), soft_wrap=True)
    if remote or print_only:
        return
    # The MLflow of this environment, whatever else is on PATH.
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    if settings.artifact_root:
        command += ["--default-artifact-root", settings.artifact_root]
    console.print(Text.assemble("serving ", as_text(uri), " (Ctrl-C stops)"))
    try:
        # Without MLflow's job runner (five more processes, for features tuner does not use).
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ)
        subprocess.run(command, check=False, env=env)
    except KeyboardInterrupt:
        pass
