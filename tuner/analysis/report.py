"""The report of a finished job: its plots and a self-contained ``report.html``.

It reads only the job's stored result (and, for hyperparameter importance, its Optuna
studies): the statistics come from :mod:`tuner.analysis.statistics`, the figures from
:mod:`tuner.analysis.plots`. A report can be written again at any time (``tuner report ID``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.analysis import plots
from tuner.analysis.statistics import ALPHA, SHUFFLES, report_facts
from tuner.results import FINAL_SEED_BASE, is_finite

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
    """Installed versions of the libraries that decide a result (REFERENCE.md protocol 8)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_report(job_id: int, spec: Any, result: Mapping[str, Any], out_dir: Path, *,
                 storage_url: str | None = None, shuffles: int = SHUFFLES) -> list[Path]:
    """Write ``out_dir/report.html`` and its PNGs beside it; return the files written.

    Pure over the stored result, except that it opens the Optuna studies
    ``job-<id>-<optimizer>`` at ``storage_url`` for the hyperparameter importance (skipped,
    with a note, when ``storage_url`` is ``None``). ``spec`` is the stored job spec (a dict,
    or a :class:`~tuner.spec.JobSpec`). The PNGs come first in the list, ``report.html`` last.

    Example:
        >>> with store.session_scope(url) as session:
        ...     job = store.get_job(session, 7)
        ...     files = write_report(job.id, job.spec, job.result, Path("report-7"),
        ...                          storage_url=url)
    """
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump(mode="json")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = report_facts(spec, result, shuffles=shuffles)
    colors = plots.optimizer_colors(list(result.get("optimizers") or {}))
    drawn: dict[str, Path] = {}
    notes: list[str] = []
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
    ):
        path = draw(out_dir / filename)
        if path is not None:
            drawn[filename] = path
    path, importance_notes = plots.plot_importance(
        spec, result, out_dir / "importance.png", job_id=job_id, storage_url=storage_url,
        colors=colors)
    notes.extend(importance_notes)
    if path is not None:
        drawn["importance.png"] = path
    html = render_html(job_id, spec, result, facts=facts, figures=list(drawn), notes=notes,
                       versions=result.get("versions") or library_versions(),
                       versions_stored="versions" in result)
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


def render_html(job_id: int, spec: Mapping[str, Any], result: Mapping[str, Any], *,
                facts: Mapping[str, Any], figures: Sequence[str], notes: Sequence[str] = (),
                versions: Mapping[str, str] | None = None,
                versions_stored: bool = False) -> str:
    """The self-contained ``report.html`` (inline CSS; the PNGs referenced beside it)."""
    from html import escape

    import yaml

    metric, mode = spec["metric"], spec["mode"]
    arrow = "↓" if mode == "min" else "↑"
    rows = result.get("leaderboard") or []
    show_target = spec.get("target") is not None
    head = ["#", "optimizer", f"final {metric} {arrow}<br>mean ± std (n)", "95% CI ±",
            "median [min, max]", "vs #1 (Welch t, Holm)", "best trial", "lr", "batch",
            "trials ok / pruned / diverged / failed", "s / epoch"]
    if show_target:
        head.append(f"epoch (s) at target {spec['target']:g}")
    body = []
    for row in rows:
        name = row["optimizer"]
        f = facts["optimizers"].get(name, {})
        seeds = f.get("seeds") or {}
        if row.get("mean") is not None:
            score = f"{_fmt(row['mean'])} ± {_fmt(row['std'], 2)} ({row['seeds']})"
        else:
            score = "–"
        p = row.get("p_vs_leader")
        if row.get("rank") == 1:
            verdict = '<span class="leader">leader</span>'
        elif p is None:
            verdict = "–"
        elif row.get("tied_with_leader"):
            verdict = f'<span class="tied">tied</span> p = {p:.2f}{_raw(row)}'
        else:
            verdict = f'<span class="worse">worse</span> p = {p:.2g}{_raw(row)}'
        best = (f"{_fmt(row['best'])} (#{row['trial']})" if row.get("best") is not None
                else "–")
        spread_text = (f"{_fmt(seeds.get('median'))} [{_fmt(seeds.get('min'))}, "
                       f"{_fmt(seeds.get('max'))}]" if seeds.get("n") else "–")
        cells = [str(row.get("rank", "")), f"<b>{escape(name)}</b>", score,
                 _fmt(row.get("ci95"), 2), spread_text, verdict, best, _fmt(row.get("lr"), 2),
                 _fmt(row.get("batch_size")),
                 f"{row['complete']} / {row['pruned']} / {row['diverged']} / {row['failed']}",
                 _fmt(f.get("seconds_per_epoch"), 2)]
        if show_target:
            speed = f.get("speed") or {}
            epoch = speed.get("epoch")
            never = epoch is not None and epoch > spec["epochs"]
            text = (f"never (&gt; {spec['epochs']})" if never else
                    f"{_fmt(epoch)} ({_fmt(speed.get('seconds'), 2)} s)")
            cells.append(f"{text} · {speed.get('reached', 0)}/{speed.get('runs', 0)} runs")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
             "<tbody>" + "".join(body) + "</tbody></table>")

    tun_rows = []
    for name in [r["optimizer"] for r in rows] or list(facts["optimizers"]):
        f = facts["optimizers"].get(name)
        if f is None:
            continue
        t, s, seeds, hyper = f["tunability"], f["shares"], f["seeds"], f["hyper"]
        ratio = (hyper["std"] / seeds["std"] if hyper.get("std") and seeds.get("std")
                 else None)
        tun_rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in [
                f"<b>{escape(name)}</b>", _fmt(t["best"]), _fmt(t["expected_1"]),
                _fmt(t["k_within_1pct"]) + f" of {t['n']}", _fmt(t["cpe"]), _fmt(t["cpu"]),
                _fmt(t["cpl"]),
                f"{_pct(s['share_pruned'])} / {_pct(s['share_diverged'])} / "
                f"{_pct(s['share_failed'])}",
                _fmt(seeds.get("std"), 2), _fmt(hyper.get("std"), 2),
                "–" if ratio is None else f"{ratio:.2g}×" if ratio < 10 else f"{ratio:.0f}×"])
            + "</tr>")
    tun_table = (
        "<table><thead><tr><th>optimizer</th><th>best trial</th><th>expected best of 1 "
        "trial</th><th>trials to within 1% of best</th><th>CPE (early)</th><th>CPU "
        "(uniform)</th><th>CPL (late)</th><th>pruned / diverged / failed</th>"
        "<th>std across seeds</th><th>std across hyperparameters</th>"
        "<th>hyper / seed std</th></tr></thead><tbody>" + "".join(tun_rows)
        + "</tbody></table>")

    warnings = list(facts.get("warnings") or [])
    warn_html = ("<ul class='warn'>" + "".join(f"<li>{escape(w)}</li>" for w in warnings)
                 + "</ul>" if warnings else "<p>None: no best value at the edge of its range, "
                 "no inclusion violation, no optimizer without a complete trial.</p>")
    captions = dict(FIGURES)
    figs = "".join(
        f"<figure><img src='{escape(name)}' alt='{escape(name)}'>"
        f"<figcaption>{escape(captions.get(name, name))}</figcaption></figure>"
        for name, _ in FIGURES if name in figures)
    note_html = ("<ul class='notes'>" + "".join(f"<li>{escape(n)}</li>" for n in notes)
                 + "</ul>" if notes else "")
    versions = versions or {}
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items())
    version_origin = ("stored with the job" if versions_stored
                      else "installed where this report was made, not necessarily where the "
                           "job ran")
    spec_yaml = yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True)
    winner = (result.get("export") or {}).get("best")
    seconds: Any = result.get("seconds")
    summary = (f"Job {job_id} compared {len(rows)} optimizers on <b>{escape(str(spec['task']))}"
               f"</b> by <b>{escape(metric)}</b> ({'lower' if mode == 'min' else 'higher'} is "
               f"better)" + (f"; best: <b>{escape(str(winner))}</b>" if winner else "")
               + (f"; it took {seconds:.0f} s." if is_finite(seconds) else "."))
    return _HTML.format(
        title=escape(f"tuner report — job {job_id}: {spec.get('name', '')}"),
        summary=summary, table=table, protocol=escape(protocol_text(spec)),
        warnings=warn_html, tunability=tun_table, figures=figs, notes=note_html,
        versions=escape(version_text), version_origin=version_origin,
        problem=escape(_problem_text(result.get("problem"))),
        spec=escape(spec_yaml), shuffles=_shuffles(facts),
    )


def _raw(row: Mapping[str, Any]) -> str:
    """`` (raw 0.037)``: Welch's p before Holm's adjustment, when it differs."""
    raw, p = row.get("p_raw"), row.get("p_vs_leader")
    if raw is None or p is None or abs(raw - p) < 1e-12:
        return ""
    return f" (raw {raw:.2g})"


def _shuffles(facts: Mapping[str, Any]) -> Any:
    """How many random trial orders the tunability curves averaged."""
    first: Mapping[str, Any] = next(iter(facts["optimizers"].values()), {})
    return (first.get("tunability", {}).get("curve") or {}).get("shuffles", SHUFFLES)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; font-size: .88em; margin: .6em 0; }}
th, td {{ border: 1px solid #ddd; padding: .3em .55em; text-align: right; }}
th {{ background: #f4f4f4; vertical-align: bottom; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
.leader {{ color: #17803d; font-weight: bold; }} .tied {{ color: #1f6fb4; font-weight: bold; }}
.worse {{ color: #b03a2e; }}
ul.warn li {{ color: #8a5a00; }} ul.notes li {{ color: #666; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: .9em; color: #444; margin-top: .3em; }}
pre {{ background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<h2>Leaderboard</h2>
{table}
<h2>Protocol</h2>
<p>{protocol}</p>
<h2>Warnings</h2>
{warnings}
<h2>Tunability and sensitivity</h2>
<p>Expected best after k trials from {shuffles} random orders of each optimizer's trials
(Sivaprasad et al. 2020); CPE, CPU and CPL are its mean over k = 1..n weighted early, uniformly
and late. "std across seeds" is the spread of the final re-runs (sensitivity to initialization),
"std across hyperparameters" that of all complete trials.</p>
{tunability}
<h2>Figures</h2>
{notes}
{figures}
<h2>Re-running this job</h2>
<p>Library versions ({version_origin}): {versions}.</p>
<p>Problem instance: {problem}.</p>
<p>The job file (<code>tuner run job.yaml</code> with the same seed on the same hardware gives
the same trials):</p>
<pre>{spec}</pre>
</body></html>
"""
