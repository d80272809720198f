"""The report's figures: matplotlib PNGs drawn from a job's stored result. Pure: no Ray, no MLflow.

Every function takes the stored job spec (``JobSpec.model_dump(mode="json")``) and result
(``Job.result``), writes one PNG to ``path`` and returns it, or returns ``None`` when the job
has nothing to draw (no final runs, not a landscape task, ...). Figures are built on
:class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no global state, no GUI
backend, safe in a server thread. Each optimizer keeps its color in every figure
(:func:`optimizer_colors`).

Example::

    from tuner.analysis import plots
    plots.plot_convergence(job.spec, job.result, Path("out/convergence.png"))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.analysis.statistics import report_facts
from tuner.results import is_finite
from tuner.spec import study_name

if TYPE_CHECKING:
    import optuna
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "landscape_of",
    "metric_label",
    "optimizer_colors",
    "plot_convergence",
    "plot_importance",
    "plot_landscape",
    "plot_lr_range",
    "plot_lr_sensitivity",
    "plot_seed_sensitivity",
    "plot_tunability",
]

DPI = 120

# One color per optimizer, the same in every figure and every job: the classic seven in the
# order people learn them, then the modern ones (tab10, then Dark2 for the rest).
_CANONICAL = ("gd", "sgd", "minibatch", "momentum", "nag", "rmsprop", "adam", "adamw", "nadam",
              "radam", "adagrad", "adadelta", "adamax")
_PALETTE = ("#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#9467bd", "#ff7f0e", "#d62728",
            "#2ca02c", "#8c564b", "#e377c2", "#1b9e77", "#a6761d", "#66a61e", "#e7298a",
            "#7570b3", "#d95f02", "#e6ab02")

# Trial outcomes, in the share bars.
_STATE_COLORS = {"complete": "#4c9a5f", "pruned": "#e8b04b", "diverged": "#c8413b",
                 "failed": "#8c8c8c"}


def optimizer_colors(names: Sequence[str]) -> dict[str, str]:
    """A color per optimizer: fixed for the shipped optimizers, then the palette's rest."""
    colors: dict[str, str] = {}
    spare = [c for i, c in enumerate(_PALETTE) if i >= len(_CANONICAL)]
    for name in names:
        if name in _CANONICAL:
            colors[name] = _PALETTE[_CANONICAL.index(name)]
        else:
            colors[name] = spare[len([n for n in colors if n not in _CANONICAL]) % len(spare)]
    return colors


def metric_label(metric: str, mode: str) -> str:
    """``val_accuracy (higher is better)``: an axis label with the metric and its direction."""
    return f"{metric} ({'lower' if mode == 'min' else 'higher'} is better)"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _title(spec: Mapping[str, Any], what: str) -> str:
    return f"{what}\n{spec.get('name', 'job')} · task {spec.get('task')} · metric {spec['metric']}"


def _log_scale(values: Sequence[float], mode: str) -> bool:
    """Log y for a non-negative metric to minimize whose positive values span more than two
    decades (losses, distances to a minimum); accuracies stay linear."""
    finite = [v for v in values if is_finite(v)]
    positive = [v for v in finite if v > 0]
    return (mode == "min" and bool(positive) and min(finite) >= 0
            and max(positive) / min(positive) > 100)


def _set_log_y(ax: Axes, values: Sequence[float]) -> None:
    """Log y; symmetric-log below the smallest positive value when some values are exactly 0
    (a run that reached the minimum exactly must stay visible)."""
    finite = [v for v in values if is_finite(v)]
    if any(v == 0 for v in finite):
        floor = min(v for v in finite if v > 0)
        ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(floor)))
    else:
        ax.set_yscale("log")


def _style(ax: Axes, *, integer_x: bool = False) -> None:
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _grid(n: int, ncols_max: int = 4) -> tuple[int, int]:
    ncols = min(ncols_max, max(1, n))
    return math.ceil(n / ncols), ncols


def _names(result: Mapping[str, Any]) -> list[str]:
    """Optimizers in leaderboard order (best first), then any the leaderboard lacks."""
    ranked = [row["optimizer"] for row in result.get("leaderboard") or []]
    rest = [n for n in (result.get("optimizers") or {}) if n not in ranked]
    return [n for n in ranked if n in (result.get("optimizers") or {})] + rest


# -- convergence -----------------------------------------------------------------------------


def _final_curves(o: Mapping[str, Any], metric: str) -> tuple[list[list[float]], int]:
    """The metric curves of the complete final runs, and how many final runs did not complete
    (a diverged run's last values before the NaN would swamp the band; it is counted)."""
    curves, lost = [], 0
    for final in o.get("finals") or []:
        if final.get("state", "COMPLETE") != "COMPLETE":
            lost += 1
            continue
        curve = (final.get("curves") or {}).get(metric) or []
        if curve:
            curves.append([float(v) if is_finite(v) else math.nan for v in curve])
    return curves, lost


def plot_convergence(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                     colors: Mapping[str, str] | None = None) -> Path | None:
    """The validation metric per epoch of the final re-runs: median and min–max band per
    optimizer (protocol 3); runs that diverged or failed are left out and counted in the
    legend. A linear metric gets a second panel zoomed on the last half of the epochs, where
    the optimizers part. ``None`` without any complete final run."""
    import numpy as np

    metric, mode = spec["metric"], spec["mode"]
    names = _names(result)
    colors = colors or optimizer_colors(names)
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
    lost: dict[str, int] = {}
    for name in names:
        curves, lost[name] = _final_curves(result["optimizers"][name], metric)
        if not curves:
            continue
        length = max(len(c) for c in curves)
        grid = np.full((len(curves), length), np.nan)
        for i, c in enumerate(curves):
            grid[i, : len(c)] = c
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs: diverged
                series[name] = (np.nanmedian(grid, axis=0), np.nanmin(grid, axis=0),
                                np.nanmax(grid, axis=0), len(curves))
    if not series:
        return None
    every = [v for med, lo, hi, _ in series.values() for v in np.concatenate([lo, hi])]
    log = _log_scale(every, mode)
    zoom = not log and spec.get("epochs", 0) >= 4
    fig = _figure(12.5 if zoom else 8.5, 5.2)
    axes = fig.subplots(1, 2, width_ratios=(1, 1)) if zoom else [fig.subplots()]
    for index, ax in enumerate(axes):
        for name, (median, low, high, n) in series.items():
            epochs = np.arange(1, median.size + 1)
            ax.fill_between(epochs, low, high, color=colors[name], alpha=0.18, linewidth=0)
            label = f"{name} (n={n}" + (f", {lost[name]} diverged/failed left out)"
                                        if lost.get(name) else ")")
            ax.plot(epochs, median, color=colors[name], linewidth=1.8,
                    label=label if index == 0 else None)
        if spec.get("target") is not None:
            ax.axhline(spec["target"], color="black", linestyle="--", linewidth=1,
                       label=f"target {spec['target']:g}" if index == 0 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label(metric, mode))
        if log:
            _set_log_y(ax, every)
        _style(ax, integer_x=True)
    axes[0].set_title("median of the final re-runs (band: min–max across seeds)", fontsize=10)
    if zoom:
        ax = axes[1]
        length = max(m.size for m, *_ in series.values())
        start = max(1, length // 2)
        window = [v for med, lo, hi, _ in series.values()
                  for v in np.concatenate([lo[start - 1:], hi[start - 1:]]) if np.isfinite(v)]
        if window:
            # The bulk of the late values, so one straggler does not flatten the others.
            lo_q, hi_q = np.percentile(window, [2, 100]) if mode == "max" else np.percentile(
                window, [0, 98])
            pad = 0.08 * (hi_q - lo_q or abs(hi_q) or 1.0)
            ax.set_ylim(lo_q - pad, hi_q + pad)
        ax.set_xlim(start - 0.3, length + 0.3)
        ax.set_title(f"zoom: epochs {start}–{length}", fontsize=10)
    axes[0].legend(fontsize=8, loc="best", frameon=False,
                   title="optimizer (seeds)", title_fontsize=8)
    fig.suptitle(_title(spec, "Convergence of each optimizer's best setting"), fontsize=11)
    return _save(fig, path)


# -- learning-rate sensitivity ---------------------------------------------------------------


def _lr_range(o: Mapping[str, Any]) -> tuple[float, float] | None:
    lr = ((o.get("space") or {}).get("params") or {}).get("lr") or {}
    if lr.get("type") == "float" and is_finite(lr.get("low")) and is_finite(lr.get("high")):
        return float(lr["low"]), float(lr["high"])
    choices = lr.get("choices")
    if choices and all(is_finite(c) for c in choices):
        return float(min(choices)), float(max(choices))
    return None


def _last(curve: Sequence[Any] | None) -> float | None:
    finite = [v for v in curve or [] if is_finite(v)]
    return float(finite[-1]) if finite else None


def plot_lr_sensitivity(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                        colors: Mapping[str, str] | None = None) -> Path | None:
    """Final metric against learning rate, every trial, one panel per optimizer (protocol 6).

    Filled dots: complete trials; hollow: pruned trials at their last reported value; ``x`` at
    the worst edge: diverged; grey ``+``: failed; star: the best trial, with its final re-runs
    (one dot per seed) beside it. Shaded: learning rates outside the optimizer's search range.
    ``None`` when no trial has a learning rate.
    """
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    metric, mode = spec["metric"], spec["mode"]
    names = [n for n in _names(result)
             if any(is_finite((t.get("hyperparameters") or {}).get("lr"))
                    for t in result["optimizers"][n].get("trials") or [])]
    if not names:
        return None
    colors = colors or optimizer_colors(names)
    values: list[float] = []
    lrs: list[float] = []
    for name in names:
        o = result["optimizers"][name]
        for t in o.get("trials") or []:
            lr = (t.get("hyperparameters") or {}).get("lr")
            if is_finite(lr) and lr > 0:
                lrs.append(lr)
            v = t.get("value") if t.get("state") == "COMPLETE" else (
                _last(t.get("curve")) if t.get("state") == "PRUNED" else None)
            if is_finite(v):
                values.append(v)
        span = _lr_range(o)
        if span:
            lrs.extend(span)
    log_y = _log_scale(values, mode)
    x_lo, x_hi = min(lrs) / 2, max(lrs) * 2
    rows, cols = _grid(len(names))
    fig = _figure(3.4 * cols + 0.6, 2.9 * rows + 1.2)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    edge = 0.03 if mode == "max" else 0.97  # the worst edge, in axes coordinates
    for ax, name in zip(axes, names, strict=False):
        o = result["optimizers"][name]
        color = colors[name]
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        span = _lr_range(o)
        if span:
            ax.axvspan(x_lo, span[0], color="0.88", linewidth=0)
            ax.axvspan(span[1], x_hi, color="0.88", linewidth=0)
        counts = {"COMPLETE": 0, "PRUNED": 0, "DIVERGED": 0, "FAIL": 0}
        points: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in counts}
        for t in o.get("trials") or []:
            lr = (t.get("hyperparameters") or {}).get("lr")
            if not (is_finite(lr) and lr > 0):
                continue
            state = t.get("state", "FAIL")
            state = state if state in counts else "FAIL"
            counts[state] += 1
            if state == "COMPLETE":
                y = t.get("value") if is_finite(t.get("value")) else None
            elif state == "PRUNED":
                y = _last(t.get("curve"))
            else:
                y = edge
            if y is not None:
                points[state][0].append(lr)
                points[state][1].append(y)
        ax.scatter(*points["COMPLETE"], s=26, color=color, edgecolor="white", linewidth=0.5,
                   zorder=3)
        ax.scatter(*points["PRUNED"], s=26, facecolor="none", edgecolor=color, linewidth=1.1,
                   zorder=3)
        ax.scatter(*points["DIVERGED"], marker="x", s=34, color=color, linewidth=1.5,
                   transform=trans, clip_on=False, zorder=4)
        ax.scatter(*points["FAIL"], marker="+", s=34, color="0.45", linewidth=1.2,
                   transform=trans, clip_on=False, zorder=4)
        best = (o.get("hyperparameters") or {}).get("lr")
        if is_finite(best) and is_finite(o.get("best_value")):
            ax.scatter(best, o["best_value"], marker="*", s=150, color=color,
                       edgecolor="black", linewidth=0.8, zorder=5)
            finals = [f.get("value") for f in o.get("finals") or [] if is_finite(f.get("value"))]
            if finals:
                # Every final re-run beside the star: the spread across seeds at this setting.
                ax.vlines(best * 1.4, min(finals), max(finals), color="black", linewidth=1,
                          zorder=5)
                ax.scatter([best * 1.4] * len(finals), finals, s=9, color="black", zorder=5)
        ax.set_xscale("log")
        ax.set_xlim(x_lo, x_hi)
        if log_y:
            _set_log_y(ax, values)
        ax.set_title(
            f"{name}: {counts['COMPLETE']} ok · {counts['PRUNED']} pruned · "
            f"{counts['DIVERGED']} diverged" + (f" · {counts['FAIL']} failed"
                                                if counts["FAIL"] else ""),
            fontsize=9, color=color, fontweight="bold")
        _style(ax)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax in axes[: len(names)]:
        if ax.get_subplotspec().is_last_row() or not axes[
                min(len(axes) - 1, list(axes).index(ax) + cols)].get_visible():
            ax.set_xlabel("learning rate (log)")
            ax.tick_params(labelbottom=True)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(metric_label(metric, mode), fontsize=9)
    handles = [
        Line2D([], [], marker="o", linestyle="", color="0.3", label="complete trial"),
        Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
               markeredgecolor="0.3", label="pruned (last value)"),
        Line2D([], [], marker="x", linestyle="", color="0.3", label="diverged (worst edge)"),
        Line2D([], [], marker="*", linestyle="", markersize=11, color="0.6",
               markeredgecolor="black", label="best trial"),
        Line2D([], [], marker="o", linestyle="-", markersize=3, color="black",
               label="final re-runs (seeds) of the best"),
        Line2D([], [], marker="s", linestyle="", markersize=9, color="0.88",
               label="outside the search range"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=6, fontsize=8,
               frameon=False)
    fig.suptitle(_title(spec, "Learning-rate sensitivity: final value of every trial"),
                 fontsize=11)
    return _save(fig, path)


# -- tunability ------------------------------------------------------------------------------


def plot_tunability(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                    facts: Mapping[str, Any] | None = None,
                    colors: Mapping[str, str] | None = None) -> Path | None:
    """Left: expected best-so-far after k trials over random trial orders, with the 25–75%
    band (protocol 5; failures score the job's worst value). Right: the share of trials that
    completed, were pruned, diverged or failed, per optimizer. ``facts`` is
    :func:`tuner.analysis.statistics.report_facts` (computed when not given)."""
    import numpy as np

    metric, mode = spec["metric"], spec["mode"]
    facts = facts if facts is not None else report_facts(spec, result)
    names = [n for n in _names(result) if n in facts["optimizers"]
             and facts["optimizers"][n]["shares"]["n"]]
    if not names:
        return None
    colors = colors or optimizer_colors(names)
    fig = _figure(13, 5.2)
    left, right = fig.subplots(1, 2, width_ratios=(1.7, 1))
    every: list[float] = []
    for name in names:
        tun = facts["optimizers"][name]["tunability"]
        curve = tun["curve"]
        if not curve["k"] or not all(is_finite(v) for v in curve["mean"]):
            continue
        k = np.asarray(curve["k"])
        left.fill_between(k, curve["low"], curve["high"], color=colors[name], alpha=0.13,
                          linewidth=0, step=None)
        label = name
        if tun.get("k_within_1pct"):
            label += f" (within 1% of its best at k = {tun['k_within_1pct']})"
        left.plot(k, curve["mean"], color=colors[name], linewidth=1.8, label=label)
        every.extend(curve["low"] + curve["high"])
    if _log_scale(every, mode):
        _set_log_y(left, every)
    n_max = max(facts["optimizers"][n]["tunability"]["n"] for n in names)
    left.set_xlim(1, max(2, n_max))
    left.set_xlabel("trials k (budget)")
    left.set_ylabel(f"expected best {metric_label(metric, mode)}", fontsize=9)
    shuffles = next(iter(facts["optimizers"].values()))["tunability"]["curve"]["shuffles"]
    left.set_title(f"expected best after k trials ({shuffles} random orders; band: 25–75%; "
                   "a failed or pruned trial scores the job's worst)", fontsize=9)
    left.legend(fontsize=8, frameon=False, loc="best")
    _style(left, integer_x=True)

    y = np.arange(len(names))[::-1]
    start = np.zeros(len(names))
    for state, color in _STATE_COLORS.items():
        shares = np.array([facts["optimizers"][n]["shares"][f"share_{state}"] or 0.0
                           for n in names])
        bars = right.barh(y, shares, left=start, color=color, label=state, height=0.65)
        for bar, share, count in zip(bars, shares, [facts["optimizers"][n]["shares"][state]
                                                    for n in names], strict=True):
            if share >= 0.08:
                right.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2,
                           str(count), ha="center", va="center", fontsize=8, color="white",
                           fontweight="bold")
        start += shares
    right.set_yticks(y, names)
    for tick, name in zip(right.get_yticklabels(), names, strict=True):
        tick.set_color(colors[name])
        tick.set_fontweight("bold")
    right.set_xlim(0, 1)
    right.xaxis.set_major_formatter(_percent())
    right.set_xlabel("share of the optimizer's trials")
    right.set_title("trial outcomes (counts on the bars)", fontsize=9)
    right.legend(fontsize=8, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.06),
                 frameon=False)
    right.spines[["top", "right"]].set_visible(False)
    fig.suptitle(_title(spec, "Tunability: how quickly tuning finds a good setting"),
                 fontsize=11)
    return _save(fig, path)


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


# -- hyperparameter importance ---------------------------------------------------------------


def importances(study: optuna.Study, *, seed: int = 0) -> dict[str, float] | str:
    """fANOVA importances of a study's parameters, or why there are none (a note)."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3:
        return f"too few complete trials ({len(complete)}; needs 3)"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (ValueError, RuntimeError) as e:  # e.g. every trial has the same value
        return f"not computable: {e}"


def plot_importance(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                    job_id: int, storage_url: str | None,
                    colors: Mapping[str, str] | None = None) -> tuple[Path | None, list[str]]:
    """Hyperparameter importance per optimizer (Optuna's fANOVA evaluator, seed 0) on the
    studies ``job-<id>-<optimizer>``; an optimizer with fewer than 3 complete trials gets a
    note instead of bars. Returns the PNG (``None`` without a storage or any study) and the
    notes."""
    if not storage_url:
        return None, ["no study storage given: hyperparameter importance skipped"]
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    names = _names(result)
    colors = colors or optimizer_colors(names)
    found: dict[str, dict[str, float] | str] = {}
    notes: list[str] = []
    for name in names:
        try:
            study = optuna.load_study(study_name=study_name(job_id, name), storage=storage_url)
        except KeyError:
            notes.append(f"{name}: no study {study_name(job_id, name)} in the storage")
            continue
        found[name] = importances(study)
        if isinstance(found[name], str):
            notes.append(f"{name}: hyperparameter importance {found[name]}")
    if not found:
        return None, notes
    rows, cols = _grid(len(found), 4)
    fig = _figure(3.4 * cols + 0.4, 2.6 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True).ravel()
    for ax, (name, value) in zip(axes, found.items(), strict=False):
        ax.set_title(name, fontsize=10, color=colors[name], fontweight="bold")
        _style(ax)
        if isinstance(value, str) or not value:
            ax.text(0.5, 0.5, value or "no tuned parameter", ha="center", va="center",
                    fontsize=8.5, transform=ax.transAxes, wrap=True, color="0.35")
            ax.set_yticks([])
            continue
        params = sorted(value, key=lambda p: value[p])
        labels = [p.replace("one_minus_", "1 − ") for p in params]
        ax.barh(labels, [value[p] for p in params], color=colors[name], height=0.6)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[len(found):]:
        ax.set_visible(False)
    for ax in axes[: len(found)]:
        ax.set_xlabel("importance (fANOVA, sums to 1)", fontsize=8)
        ax.tick_params(labelbottom=True)
    fig.suptitle(_title(spec, "Hyperparameter importance per optimizer (complete trials)"),
                 fontsize=11)
    return _save(fig, path), notes


# -- landscapes ------------------------------------------------------------------------------


def landscape_of(task: str) -> str | None:
    """``"rosenbrock"`` or ``"rastrigin"`` for the two-parameter landscape tasks, else ``None``."""
    name = task.rsplit(":", 1)[-1] if ":" in task else task
    if ":" in task and not task.startswith("workers.tasks.landscapes"):
        return None
    return name if name in ("rosenbrock", "rastrigin") else None


def _start_point(kind: str, seed: Any) -> tuple[float, float] | None:
    """The seed's start point, rebuilt by the task's own factory (cheap: one tensor)."""
    if not isinstance(seed, int):
        return None
    try:
        from workers.tasks import landscapes

        return getattr(landscapes, kind)(seed).model.position
    except Exception:  # noqa: BLE001 - the path is drawn without its start then
        return None


def _best_path(o: Mapping[str, Any], mode: str) -> tuple[list[tuple[float, float]], Any]:
    """The positions of the optimizer's best final run (else of its best trial) and its seed."""
    finals = [f for f in o.get("finals") or []
              if is_finite(f.get("value")) and (f.get("curves") or {}).get("position")]
    if finals:
        best = (min if mode == "min" else max)(finals, key=lambda f: f["value"])
        positions, seed = best["curves"]["position"], best.get("seed")
    else:
        positions, seed = (o.get("best_curves") or {}).get("position") or [], None
    points = [(float(p[0]), float(p[1])) for p in positions
              if p is not None and len(p) == 2 and is_finite(p[0]) and is_finite(p[1])]
    return points, seed


def plot_landscape(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                   colors: Mapping[str, str] | None = None) -> Path | None:
    """The path of each optimizer's best final run on the contour of the landscape (epoch
    ends, the seed's start point first); log-spaced levels for Rosenbrock; the minimum
    starred. ``None`` unless the task is ``rosenbrock`` or ``rastrigin``."""
    import numpy as np
    from matplotlib.colors import LogNorm

    from workers.tasks import landscapes

    kind = landscape_of(str(spec.get("task", "")))
    if kind is None:
        return None
    f = landscapes.rosenbrock_value if kind == "rosenbrock" else landscapes.rastrigin_value
    minimum = landscapes.ROSENBROCK_MINIMUM if kind == "rosenbrock" else \
        landscapes.RASTRIGIN_MINIMUM
    start = landscapes.ROSENBROCK_START if kind == "rosenbrock" else landscapes.RASTRIGIN_START
    names = _names(result)
    colors = colors or optimizer_colors(names)
    paths: dict[str, list[tuple[float, float]]] = {}
    for name in names:
        points, seed = _best_path(result["optimizers"][name], spec["mode"])
        first = _start_point(kind, seed)
        if first is not None:
            points = [first, *points]
        if points:
            paths[name] = points
    # The window: the classic start, the minimum and the paths, within sane bounds.
    xs = [start[0], minimum[0]] + [p[0] for ps in paths.values() for p in ps]
    ys = [start[1], minimum[1]] + [p[1] for ps in paths.values() for p in ps]
    limit = 3.0 if kind == "rosenbrock" else 5.12
    x_lo, x_hi = max(min(xs), -limit), min(max(xs), limit)
    y_lo, y_hi = max(min(ys), -limit), min(max(ys), limit + (2 if kind == "rosenbrock" else 0))
    pad_x, pad_y = 0.15 * (x_hi - x_lo) + 0.2, 0.15 * (y_hi - y_lo) + 0.2
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y
    gx, gy = np.meshgrid(np.linspace(x_lo, x_hi, 400), np.linspace(y_lo, y_hi, 400))
    z = np.asarray(f(gx, gy))
    fig = _figure(8.8, 6.6)
    ax = fig.subplots()
    if kind == "rosenbrock":
        # Log-spaced levels: the valley floor spans decades below the walls.
        levels = np.logspace(-1, math.log10(max(float(z.max()), 10.0)), 18)
        filled = ax.contourf(gx, gy, np.maximum(z, levels[0]), levels=levels, norm=LogNorm(),
                             cmap="Greys_r", alpha=0.55, extend="min")
        ax.contour(gx, gy, z, levels=levels, colors="0.45", linewidths=0.4, norm=LogNorm())
    else:
        levels = np.linspace(0, float(z.max()), 16)
        filled = ax.contourf(gx, gy, z, levels=levels, cmap="Greys_r", alpha=0.55)
        ax.contour(gx, gy, z, levels=levels, colors="0.45", linewidths=0.4)
    ticks = None
    if kind == "rosenbrock":
        ticks = [10.0**e for e in range(-1, math.ceil(math.log10(levels[-1])) + 1)
                 if 10.0**e <= levels[-1]]
    bar = fig.colorbar(filled, ax=ax, shrink=0.85, pad=0.01, ticks=ticks)
    bar.set_label(f"{kind}(x, y)" + (" (log scale)" if kind == "rosenbrock" else ""))
    for name, points in paths.items():
        px, py = zip(*points, strict=True)
        ax.plot(px, py, color=colors[name], linewidth=1.6, marker="o", markersize=2.5,
                label=f"{name} ({len(points) - 1} epochs)", zorder=3)
        ax.plot(px[0], py[0], marker="o", markersize=7, markerfacecolor="white",
                markeredgecolor=colors[name], markeredgewidth=1.5, zorder=4)
        ax.plot(px[-1], py[-1], marker="s", markersize=6, color=colors[name],
                markeredgecolor="black", markeredgewidth=0.7, zorder=4)
    ax.plot(*minimum, marker="*", markersize=17, color="gold", markeredgecolor="black",
            zorder=2.6, linestyle="", label=f"global minimum {minimum}")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8, loc="best", framealpha=0.85,
              title="best final run (○ start, ■ end)", title_fontsize=8)
    fig.suptitle(_title(spec, f"{kind.capitalize()}: path of each optimizer's best run"),
                 fontsize=11)
    return _save(fig, path)


# -- sensitivity to initialization ---------------------------------------------------------


def plot_seed_sensitivity(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                          colors: Mapping[str, str] | None = None) -> Path | None:
    """Sensitivity to initialization next to sensitivity to the hyperparameters (issue 4.6).

    Left: per optimizer, every complete trial's value (the spread across hyperparameters,
    light dots) beside the final re-runs of the best setting (the spread across seeds, a box
    with its dots). Right: the standard deviation of each, log scale. ``None`` when no
    optimizer has a value."""
    import numpy as np

    metric, mode = spec["metric"], spec["mode"]
    names = _names(result)
    colors = colors or optimizer_colors(names)
    data = {}
    for name in names:
        o = result["optimizers"][name]
        trials = [t["value"] for t in o.get("trials") or []
                  if t.get("state") == "COMPLETE" and is_finite(t.get("value"))]
        finals = [f["value"] for f in o.get("finals") or [] if is_finite(f.get("value"))]
        if trials or finals:
            data[name] = (trials, finals)
    if not data:
        return None
    names = list(data)
    fig = _figure(13, 5.2)
    left, right = fig.subplots(1, 2, width_ratios=(1.7, 1))
    rng = np.random.default_rng(0)
    every = [v for t, f in data.values() for v in t + f]
    for i, name in enumerate(names):
        trials, finals = data[name]
        color = colors[name]
        if trials:
            jitter = rng.uniform(-0.12, 0.12, len(trials))
            left.scatter(i - 0.2 + jitter, trials, s=14, color=color, alpha=0.35,
                         linewidth=0)
        if finals:
            box = left.boxplot([finals], positions=[i + 0.2], widths=0.28,
                               patch_artist=True, showfliers=False,
                               medianprops={"color": "black", "linewidth": 1.2})
            for patch in box["boxes"]:
                patch.set_facecolor(color)
                patch.set_alpha(0.55)
            left.scatter(np.full(len(finals), i + 0.2) + rng.uniform(-0.05, 0.05, len(finals)),
                         finals, s=12, color="black", zorder=3, linewidth=0)
    left.set_xticks(range(len(names)), names)
    for tick, name in zip(left.get_xticklabels(), names, strict=True):
        tick.set_color(colors[name])
        tick.set_fontweight("bold")
    if _log_scale(every, mode):
        _set_log_y(left, every)
    left.set_ylabel(metric_label(metric, mode))
    left.set_title("per optimizer — dots: every complete trial (across hyperparameters); "
                   "box: final re-runs of the best setting (across seeds)", fontsize=9)
    _style(left)

    width = 0.38
    x = np.arange(len(names))
    seed_std = [_std(data[n][1]) for n in names]
    hyper_std = [_std(data[n][0]) for n in names]
    right.bar(x - width / 2, [v or np.nan for v in hyper_std], width, color="0.88",
              edgecolor="0.55", hatch="///", linewidth=0.6,
              label="across hyperparameters (complete trials)")
    right.bar(x + width / 2, [v or np.nan for v in seed_std], width,
              color=[colors[n] for n in names], label="across seeds (best setting)")
    positive = [v for v in seed_std + hyper_std if v]
    if positive and max(positive) / min(positive) > 20:
        right.set_yscale("log")
    right.set_xticks(x, names, rotation=30, ha="right")
    for tick, name in zip(right.get_xticklabels(), names, strict=True):
        tick.set_color(colors[name])
    right.set_ylabel(f"standard deviation of {metric}")
    right.set_title("spread: seeds vs hyperparameters", fontsize=9)
    from matplotlib.patches import Patch

    right.legend(handles=[Patch(facecolor="0.88", edgecolor="0.55", hatch="///",
                                label="across hyperparameters (complete trials)"),
                          Patch(facecolor="white", edgecolor="0.2",
                                label="across seeds (best setting; optimizer's color)")],
                 fontsize=8, frameon=False)
    _style(right)
    fig.suptitle(_title(spec, "Sensitivity to initialization vs to the hyperparameters"),
                 fontsize=11)
    return _save(fig, path)


def _std(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# -- the learning-rate range test ------------------------------------------------------------


def plot_lr_range(spec: Mapping[str, Any], result: Mapping[str, Any], path: Path, *,
                  colors: Mapping[str, str] | None = None) -> Path | None:
    """The learning-rate range test of each optimizer (``lr_range_test: true``): the smoothed
    training loss against the growing rate, the blow-up point (x) and the range the study
    then searched (shaded). ``None`` when the job ran no range test."""
    found = result.get("lr_range") or {}
    names = [n for n in _names(result) if n in found] or list(found)
    if not names:
        return None
    colors = colors or optimizer_colors(names)
    fig = _figure(9.5, 5.0)
    ax = fig.subplots()
    every: list[float] = []
    for name in names:
        r = found[name]
        points = [(lr, loss) for lr, loss in zip(r.get("lrs") or [], r.get("losses") or [],
                                                  strict=False) if is_finite(loss)]
        if not points:
            continue
        lrs, losses = zip(*points, strict=True)
        every.extend(losses)
        ax.plot(lrs, losses, color=colors[name], linewidth=1.6,
                label=f"{name}: searched up to {r['searched_high']:.3g}")
        if r.get("blowup_lr") is not None:
            ax.plot([r["blowup_lr"]], [losses[-1]], marker="x", markersize=9,
                    color=colors[name], linestyle="none")
        ax.axvspan(r["low"], r["searched_high"], color=colors[name], alpha=0.05, linewidth=0)
    ax.set_xscale("log")
    if _log_scale(every, "min"):
        _set_log_y(ax, every)
    ax.set_xlabel("learning rate (growing exponentially, one batch per step)")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend(fontsize=8, frameon=False, loc="best")
    _style(ax)
    fig.suptitle(_title(spec, "Learning-rate range test (Smith 2017): x marks where the loss "
                              "blew up"), fontsize=11)
    return _save(fig, path)
