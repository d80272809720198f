"""The report of a finished job: its plots and a self-contained ``report.html``.

It reads only the job's stored result (and, for hyperparameter importance, its Optuna
studies, :mod:`tuner.analysis.importance`): the statistics come from
:mod:`tuner.analysis.statistics`, the figures from :mod:`tuner.analysis.plots`, the HTML from
the Jinja2 template ``templates/report.html.j2`` (autoescaped). A report can be written again
at any time (``tuner report ID``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import Markup

from tuner.analysis import plots
from tuner.analysis.importance import job_importances
from tuner.analysis.statistics import ALPHA, SHUFFLES, report_facts
from tuner.results import FINAL_SEED_BASE, JobResult, LeaderboardRow, is_finite

__all__ = ["FIGURES", "library_versions", "protocol_text", "render_html", "write_report"]

# -- the report files: plots and report.html ---------------------------------------------------

#: The figures of a report, in the order the HTML shows them, with their captions.
FIGURES: tuple[tuple[str, str], ...] = (
    ("convergence.png",
     "Convergence: the validation metric per epoch of the final re-runs of each optimizer's "
     "best setting; line: median across seeds, band: min–max."),
    ("lr_sensitivity.png",
     "Learning-rate sensitivity: the final value of every trial against its learning rate; "
     "hollow: pruned, x: diverged (at the worst edge), star: best trial, with its final "
     "re-runs (one dot per seed) beside it; shaded: outside the search range."),
    ("lr_range.png",
     "Learning-rate range test (Smith 2017): before the search, each optimizer's training loss "
     "while its rate grew exponentially; x: where the loss blew up (over 4x its minimum, or "
     "NaN); shaded: the range its study then searched."),
    ("tunability.png",
     "Tunability: expected best after k trials over random orders of each optimizer's trials "
     "(band: 25–75% of the orders; the mean leaves it when a few orders are much worse), and "
     "the share of trials completed, pruned, diverged or failed."),
    ("importance.png",
     "Hyperparameter importance per optimizer: Optuna's fANOVA evaluator on the complete "
     "trials of each study."),
    ("landscape.png",
     "The path of each optimizer's best final run on the landscape (positions at the end of "
     "each epoch, from the seed's start point); star: the global minimum."),
    ("seeds_vs_hyperparameters.png",
     "Sensitivity to initialization next to sensitivity to the hyperparameters: the final "
     "re-runs (across seeds) beside every complete trial (across hyperparameters)."),
)

_TEMPLATES = Path(__file__).parent / "templates"

_VERSIONED = ("torch", "optuna", "ray", "mlflow", "numpy", "scipy", "scikit-learn",
              "matplotlib", "tuner")


def _problem_text(problem: Mapping[str, Any] | None) -> str:
    if not problem:
        return "not recorded"
    digest = problem.get("data_sha256")
    if problem.get("train_size") is None and "train_size" in problem:
        return f"task {problem.get('task')}, a training loop (its data is its own)"
    return (f"task {problem.get('task')}, {problem.get('train_size')} training and "
            f"{problem.get('val_size')} validation examples, data SHA-256 "
            f"{digest if digest else 'not computable (not a TensorDataset)'}")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a result (docs/reference.md protocol 8)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_report(job_id: int, spec: Any, result: JobResult | Mapping[str, Any], out_dir: Path,
                 *, storage_url: str | None = None, shuffles: int = SHUFFLES) -> list[Path]:
    """Write ``out_dir/report.html`` and its PNGs beside it; return the files written.

    Pure over the stored result, except that it opens the Optuna studies
    ``job-<id>-<optimizer>`` at ``storage_url`` for the hyperparameter importance (skipped,
    with a note, when ``storage_url`` is ``None``). ``spec`` is the stored job spec (a dict,
    or a :class:`~tuner.spec.JobSpec`); ``result`` a :class:`~tuner.results.JobResult` or the
    stored JSON it is read from. The PNGs come first in the list, ``report.html`` last.

    Example:
        >>> with store.session_scope(url) as session:
        ...     job = store.get_job(session, 7)
        ...     files = write_report(job.id, job.spec, job.result, Path("report-7"),
        ...                          storage_url=url)
    """
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump(mode="json")
    if not isinstance(result, JobResult):
        result = JobResult.from_dict(result)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = report_facts(spec, result, shuffles=shuffles)
    found, notes = job_importances(job_id, result.ranked, storage_url)
    colors = plots.optimizer_colors(list(result.optimizers))
    drawn: dict[str, Path] = {}
    for filename, draw in (
        ("convergence.png", lambda p: plots.plot_convergence(spec, result, p, colors=colors)),
        ("lr_sensitivity.png",
         lambda p: plots.plot_lr_sensitivity(spec, result, p, colors=colors)),
        ("tunability.png",
         lambda p: plots.plot_tunability(spec, result, p, facts=facts, colors=colors)),
        ("landscape.png", lambda p: plots.plot_landscape(spec, result, p, colors=colors)),
        ("lr_range.png", lambda p: plots.plot_lr_range(spec, result, p, colors=colors)),
        ("seeds_vs_hyperparameters.png",
         lambda p: plots.plot_seed_sensitivity(spec, result, p, colors=colors)),
        ("importance.png", lambda p: plots.plot_importance(spec, result, p, importances=found,
                                                           colors=colors)),
    ):
        path = draw(out_dir / filename)
        if path is not None:
            drawn[filename] = path
    html = render_html(job_id, spec, result, facts=facts, figures=list(drawn), notes=notes,
                       versions=result.versions or library_versions(),
                       versions_stored=result.versions is not None)
    report = out_dir / "report.html"
    report.write_text(html, encoding="utf-8")
    ordered = [drawn[name] for name, _ in FIGURES if name in drawn]
    return [*ordered, report]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value)


def protocol_text(spec: Mapping[str, Any]) -> str:
    """The comparison protocol of a job, in one paragraph (plain text)."""
    seed, n = int(spec.get("seed", 0)), int(spec.get("final_seeds", 0))
    seeds = (f"seeds {FINAL_SEED_BASE + seed}–{FINAL_SEED_BASE + seed + n - 1}"
             if n > 1 else f"seed {FINAL_SEED_BASE + seed}")
    sampler_view = (
        " The sampler was told each diverged trial as a result as bad as the worst its study "
        "had seen (never as an invisible failure), so it learned where the rate diverges; "
        "such a trial is never the best." if spec.get("diverged_as", "worst") == "worst" else
        " The sampler was told each diverged trial as a failure, which TPE, GP and CMA-ES "
        "do not learn from (diverged_as: fail).")
    range_test = (" Before the search, a learning-rate range test (Smith 2017) per optimizer "
                  "lowered the upper end of its lr range to where the loss blew up."
                  if spec.get("lr_range_test") else "")
    order = (" Trials were asked and told in a fixed order per study (reproducible: the same "
             "seed gives the same trials)." if spec.get("reproducible") else "")
    target = (f" Speed is the first epoch at which a final run reaches {spec['metric']} = "
              f"{spec['target']:g} (median over the runs; {spec['epochs'] + 1} when never)."
              if spec.get("target") is not None else "")
    return (
        f"Every optimizer got the same budget: {spec['trials']} trials of at most "
        f"{spec['epochs']} epochs, in its own Optuna study (sampler {spec['sampler']}, pruner "
        f"{spec['pruner']}, sampler seed {seed}), on the same task and data split. The best "
        f"trial of each study was selected on the validation metric {spec['metric']} "
        f"({spec['mode']}imize) only. Its setting was then re-trained {n} times with "
        f"{seeds} (DeepOBS's 42, 43, … shifted by the job's seed); these final re-runs are not "
        f"trials of the study. Optimizers are ranked by the mean of their final re-runs; each "
        f"is compared with the leader by Welch's two-sided t-test (unequal variances), the "
        f"p-values adjusted by Holm's step-down method across the job's comparisons (so the "
        f"chance of any false \"worse\" stays at α = {ALPHA}): an adjusted p ≥ {ALPHA} means "
        f"the two cannot be told apart (tied); an optimizer "
        f"with a diverged final re-run ranks after those whose re-runs all completed. The 95% "
        f"confidence interval is Student's t on the final runs. Diverged trials (NaN or inf "
        f"loss) are counted as failures with the job's worst score, never dropped; pruned "
        f"trials count the same way in the tunability curves.{sampler_view}{range_test}"
        f"{order}{target}"
    )


def render_html(job_id: int, spec: Mapping[str, Any], result: JobResult, *,
                facts: Mapping[str, Any], figures: Sequence[str], notes: Sequence[str] = (),
                versions: Mapping[str, str] | None = None,
                versions_stored: bool = False) -> str:
    """The self-contained ``report.html`` (inline CSS; the PNGs referenced beside it), from
    the template ``templates/report.html.j2``."""
    metric, mode = spec["metric"], spec["mode"]
    target = spec.get("target")
    seconds = result.seconds
    return _template().render(
        title=f"tuner report — job {job_id}: {spec.get('name', '')}",
        job_id=job_id, task=str(spec["task"]), metric=metric,
        direction="lower" if mode == "min" else "higher", arrow="↓" if mode == "min" else "↑",
        winner=result.best, seconds=f"{seconds:.0f}" if is_finite(seconds) else None,
        target=None if target is None else f"{target:g}",
        rows=[_leaderboard_row(row, facts["optimizers"].get(row.optimizer, {}), spec)
              for row in result.leaderboard],
        protocol=protocol_text(spec),
        warnings=list(facts.get("warnings") or []),
        shuffles=_shuffles(facts),
        tunability=_tunability_rows(result, facts),
        notes=list(notes),
        figures=[(name, caption) for name, caption in FIGURES if name in figures],
        versions=", ".join(f"{k} {v}" for k, v in (versions or {}).items()),
        version_origin=("stored with the job" if versions_stored else
                        "installed where this report was made, not necessarily where the job "
                        "ran"),
        problem=_problem_text(result.problem),
        spec_yaml=yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True),
    )


def _template() -> jinja2.Template:
    """``report.html.j2``, autoescaped. Every value is escaped as :func:`html.escape` does
    (``'`` as ``&#x27;``), as the report always was."""

    def finalize(value: Any) -> Any:
        return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             finalize=finalize, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("report.html.j2")


def _leaderboard_row(row: LeaderboardRow, f: Mapping[str, Any],
                     spec: Mapping[str, Any]) -> dict[str, Any]:
    """The cells of one leaderboard row, as text (the template marks them up)."""
    seeds = f.get("seeds") or {}
    p = row.p_vs_leader
    verdict = ("leader" if row.rank == 1 else None if p is None else
               "tied" if row.tied_with_leader else "worse")
    out = {
        "rank": row.rank, "name": row.optimizer,
        "score": (f"{_fmt(row.mean)} ± {_fmt(row.std, 2)} ({row.seeds})"
                  if row.mean is not None else "–"),
        "ci": _fmt(row.ci95, 2),
        "spread": (f"{_fmt(seeds.get('median'))} [{_fmt(seeds.get('min'))}, "
                   f"{_fmt(seeds.get('max'))}]" if seeds.get("n") else "–"),
        "verdict": verdict,
        "p": "" if p is None else f"{p:.2f}" if verdict == "tied" else f"{p:.2g}",
        "raw": _raw(row),
        "best": f"{_fmt(row.best)} (#{row.trial})" if row.best is not None else "–",
        "lr": _fmt(row.lr, 2), "batch": _fmt(row.batch_size),
        "counts": f"{row.complete} / {row.pruned} / {row.diverged} / {row.failed}",
        "per_epoch": _fmt(f.get("seconds_per_epoch"), 2),
    }
    if spec.get("target") is not None:
        speed = f.get("speed") or {}
        epoch = speed.get("epoch")
        never = epoch is not None and epoch > spec["epochs"]
        text = (f"never (> {spec['epochs']})" if never else
                f"{_fmt(epoch)} ({_fmt(speed.get('seconds'), 2)} s)")
        out["speed"] = f"{text} · {speed.get('reached', 0)}/{speed.get('runs', 0)} runs"
    return out


def _tunability_rows(result: JobResult, facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cells of the tunability table, leaderboard order."""
    rows = []
    for name in [r.optimizer for r in result.leaderboard] or list(facts["optimizers"]):
        f = facts["optimizers"].get(name)
        if f is None:
            continue
        t, s, seeds, hyper = f["tunability"], f["shares"], f["seeds"], f["hyper"]
        ratio = (hyper["std"] / seeds["std"] if hyper.get("std") and seeds.get("std")
                 else None)
        rows.append({"cells": [
            name, _fmt(t["best"]), _fmt(t["expected_1"]),
            _fmt(t["k_within_1pct"]) + f" of {t['n']}", _fmt(t["cpe"]), _fmt(t["cpu"]),
            _fmt(t["cpl"]),
            f"{_pct(s['share_pruned'])} / {_pct(s['share_diverged'])} / "
            f"{_pct(s['share_failed'])}",
            _fmt(seeds.get("std"), 2), _fmt(hyper.get("std"), 2),
            "–" if ratio is None else f"{ratio:.2g}×" if ratio < 10 else f"{ratio:.0f}×"]})
    return rows


def _raw(row: LeaderboardRow) -> str:
    """`` (raw 0.037)``: Welch's p before Holm's adjustment, when it differs."""
    raw, p = row.p_raw, row.p_vs_leader
    if raw is None or p is None or abs(raw - p) < 1e-12:
        return ""
    return f" (raw {raw:.2g})"


def _shuffles(facts: Mapping[str, Any]) -> Any:
    """How many random trial orders the tunability curves averaged."""
    first: Mapping[str, Any] = next(iter(facts["optimizers"].values()), {})
    return (first.get("tunability", {}).get("curve") or {}).get("shuffles", SHUFFLES)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
