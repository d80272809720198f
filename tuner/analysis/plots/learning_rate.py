"""The learning rate: every trial's final value against its rate (protocol 6), and the
range test that may have narrowed the rate's range before the search (Smith 2017)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from tuner.analysis.plots._style import (
    figure,
    grid,
    log_scale,
    metric_label,
    optimizer_colors,
    save,
    set_log_y,
    style,
    title,
)
from tuner.results import StoredOptimizer, TrialOutcome, is_finite

if TYPE_CHECKING:
    from tuner.results import JobResult, LrRangeCurve

#: The outcomes a panel shows apart; any other (a failure) is drawn as FAIL.
_SHOWN = (TrialOutcome.COMPLETE, TrialOutcome.PRUNED, TrialOutcome.DIVERGED, TrialOutcome.FAIL)


class LrPanel(NamedTuple):
    """One optimizer's panel: its trials with a learning rate as (lr, value) by outcome (the
    value ``None`` where there is none to draw: diverged and failed trials go to the worst
    edge), its search range, the best trial and its final runs."""

    points: dict[TrialOutcome, list[tuple[float, float | None]]]
    span: tuple[float, float] | None
    best: tuple[float, float] | None  # (lr, value) of the best trial
    finals: list[float]  # the final re-runs' values


class LrSensitivityInfo(NamedTuple):
    panels: dict[str, LrPanel]
    x_range: tuple[float, float]
    values: list[float]  # every value drawn: the y scale's range
    log_y: bool


def _last(curve: Sequence[float | None]) -> float | None:
    finite = [v for v in curve if is_finite(v)]
    return float(finite[-1]) if finite else None


def _panel(o: StoredOptimizer) -> LrPanel:
    points: dict[TrialOutcome, list[tuple[float, float | None]]] = {s: [] for s in _SHOWN}
    for t in o.trials:
        if t.lr is None:
            continue
        state = t.state if t.state in _SHOWN else TrialOutcome.FAIL
        y = (t.value if state is TrialOutcome.COMPLETE else
             _last(t.curve) if state is TrialOutcome.PRUNED else None)
        points[state].append((t.lr, y if is_finite(y) else None))
    best = None
    if o.best_lr is not None and o.best_value is not None and is_finite(o.best_value):
        best = (o.best_lr, o.best_value)
    lr = o.params.get("lr")
    return LrPanel(points, lr.span if lr is not None else None, best,
                   [f.value for f in o.finals if f.value is not None and is_finite(f.value)])


def _lr_sensitivity_info(spec: Mapping[str, Any], result: JobResult
                         ) -> LrSensitivityInfo | None:
    names = [n for n in result.ranked
             if any(is_finite(t.hyperparameters.get("lr")) for t in result.optimizers[n].trials)]
    if not names:
        return None
    panels = {name: _panel(result.optimizers[name]) for name in names}
    lrs = [lr for p in panels.values() for found in p.points.values() for lr, _ in found]
    lrs += [v for p in panels.values() if p.span for v in p.span]
    values = [y for p in panels.values()
              for state in (TrialOutcome.COMPLETE, TrialOutcome.PRUNED)
              for _, y in p.points[state] if is_finite(y)]
    return LrSensitivityInfo(panels, (min(lrs) / 2, max(lrs) * 2), values,
                             log_scale(values, spec["mode"]))


def plot_lr_sensitivity(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                        colors: Mapping[str, str] | None = None) -> Path | None:
    """Final metric against learning rate, every trial, one panel per optimizer (protocol 6).

    Filled dots: complete trials; hollow: pruned trials at their last reported value; ``x`` at
    the worst edge: diverged; grey ``+``: failed; star: the best trial, with its final re-runs
    (one dot per seed) beside it. Shaded: learning rates outside the optimizer's search range.
    ``None`` when no trial has a learning rate.
    """
    info = _lr_sensitivity_info(spec, result)
    if info is None:
        return None
    metric, mode = spec["metric"], spec["mode"]
    names = list(info.panels)
    colors = colors or optimizer_colors(names)
    x_lo, x_hi = info.x_range
    rows, cols = grid(len(names))
    fig = figure(3.4 * cols + 0.6, 2.9 * rows + 1.2)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    edge = 0.03 if mode == "max" else 0.97  # the worst edge, in axes coordinates
    for ax, name in zip(axes, names, strict=False):
        panel, color = info.panels[name], colors[name]
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        if panel.span:
            ax.axvspan(x_lo, panel.span[0], color="0.88", linewidth=0)
            ax.axvspan(panel.span[1], x_hi, color="0.88", linewidth=0)

        ax.scatter(*_xy(panel, TrialOutcome.COMPLETE), s=26, color=color, edgecolor="white",
                   linewidth=0.5, zorder=3)
        ax.scatter(*_xy(panel, TrialOutcome.PRUNED), s=26, facecolor="none", edgecolor=color,
                   linewidth=1.1, zorder=3)
        ax.scatter(*_xy(panel, TrialOutcome.DIVERGED, edge), marker="x", s=34, color=color,
                   linewidth=1.5, transform=trans, clip_on=False, zorder=4)
        ax.scatter(*_xy(panel, TrialOutcome.FAIL, edge), marker="+", s=34, color="0.45",
                   linewidth=1.2, transform=trans, clip_on=False, zorder=4)
        if panel.best is not None:
            best_lr, best_value = panel.best
            ax.scatter(best_lr, best_value, marker="*", s=150, color=color,
                       edgecolor="black", linewidth=0.8, zorder=5)
            if panel.finals:
                # Every final re-run beside the star: the spread across seeds at this setting.
                ax.vlines(best_lr * 1.4, min(panel.finals), max(panel.finals), color="black",
                          linewidth=1, zorder=5)
                ax.scatter([best_lr * 1.4] * len(panel.finals), panel.finals, s=9,
                           color="black", zorder=5)
        ax.set_xscale("log")
        ax.set_xlim(x_lo, x_hi)
        if info.log_y:
            set_log_y(ax, info.values)
        counts = {state: len(found) for state, found in panel.points.items()}
        failed = counts[TrialOutcome.FAIL]
        ax.set_title(
            f"{name}: {counts[TrialOutcome.COMPLETE]} ok · {counts[TrialOutcome.PRUNED]} pruned"
            f" · {counts[TrialOutcome.DIVERGED]} diverged"
            + (f" · {failed} failed" if failed else ""),
            fontsize=9, color=color, fontweight="bold")
        style(ax)
    _label_axes(fig, axes, len(names), cols, metric_label(metric, mode))
    fig.suptitle(title(spec, "Learning-rate sensitivity: final value of every trial"),
                 fontsize=11)
    return save(fig, path)


def _xy(panel: LrPanel, state: TrialOutcome,
        edge: float | None = None) -> tuple[list[float], list[float]]:
    """The points of ``state`` to scatter: at their values, or all at ``edge`` (the worst
    edge, in axes coordinates: diverged and failed trials have no value)."""
    found = [(lr, edge if edge is not None else y) for lr, y in panel.points[state]]
    drawn = [(lr, y) for lr, y in found if y is not None]
    return [lr for lr, _ in drawn], [y for _, y in drawn]


def _label_axes(fig: Any, axes: Any, n: int, cols: int, ylabel: str) -> None:
    """x labels under the lowest panel of each column, y labels on the first column, the
    unused panels hidden, and the legend of the markers below."""
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        if ax.get_subplotspec().is_last_row() or not axes[
                min(len(axes) - 1, list(axes).index(ax) + cols)].get_visible():
            ax.set_xlabel("learning rate (log)")
            ax.tick_params(labelbottom=True)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel, fontsize=9)
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


# -- the learning-rate range test ------------------------------------------------------------


class LrRangeInfo(NamedTuple):
    tests: dict[str, LrRangeCurve]  # leaderboard order
    curves: dict[str, tuple[list[float], list[float]]]  # (lrs, losses) with a finite loss


def _lr_range_info(result: JobResult) -> LrRangeInfo | None:
    found = result.lr_range
    names = [n for n in result.ranked if n in found] or list(found)
    if not names:
        return None
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name in names:
        points = [(lr, loss) for lr, loss in zip(found[name].lrs, found[name].losses,
                                                  strict=False)
                  if lr is not None and loss is not None and is_finite(loss)]
        curves[name] = ([lr for lr, _ in points], [loss for _, loss in points])
    return LrRangeInfo({name: found[name] for name in names}, curves)


def plot_lr_range(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                  colors: Mapping[str, str] | None = None) -> Path | None:
    """The learning-rate range test of each optimizer (``lr_range_test: true``): the smoothed
    training loss against the growing rate, the blow-up point (x) and the range the study
    then searched (shaded). ``None`` when the job ran no range test."""
    info = _lr_range_info(result)
    if info is None:
        return None
    colors = colors or optimizer_colors(list(info.tests))
    fig = figure(9.5, 5.0)
    ax = fig.subplots()
    every: list[float] = []
    for name, test in info.tests.items():
        lrs, losses = info.curves[name]
        if not lrs:
            continue
        every.extend(losses)
        ax.plot(lrs, losses, color=colors[name], linewidth=1.6,
                label=f"{name}: searched up to {test.searched_high:.3g}")
        if test.blowup_lr is not None:
            ax.plot([test.blowup_lr], [losses[-1]], marker="x", markersize=9,
                    color=colors[name], linestyle="none")
        ax.axvspan(test.low, test.searched_high, color=colors[name], alpha=0.05, linewidth=0)
    ax.set_xscale("log")
    if log_scale(every, "min"):
        set_log_y(ax, every)
    ax.set_xlabel("learning rate (growing exponentially, one batch per step)")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend(fontsize=8, frameon=False, loc="best")
    style(ax)
    fig.suptitle(title(spec, "Learning-rate range test (Smith 2017): x marks where the loss "
                             "blew up"), fontsize=11)
    return save(fig, path)
