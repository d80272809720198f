"""Sensitivity to initialization (the final re-runs' spread across seeds) next to
sensitivity to the hyperparameters (every complete trial's spread)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from matplotlib.patches import Patch

from tuner.analysis.plots._style import (
    color_ticks,
    figure,
    log_scale,
    metric_label,
    optimizer_colors,
    save,
    set_log_y,
    style,
    title,
)
from tuner.results import is_finite

if TYPE_CHECKING:
    from tuner.results import JobResult


class SeedsInfo(NamedTuple):
    """Per optimizer with a value: the complete trials' values and the final runs' values."""

    trials: dict[str, list[float]]
    finals: dict[str, list[float]]

    @property
    def names(self) -> list[str]:
        return list(self.trials)


def _seeds_info(result: JobResult) -> SeedsInfo | None:
    trials: dict[str, list[float]] = {}
    finals: dict[str, list[float]] = {}
    for name in result.ranked:
        o = result.optimizers[name]
        values = [t.value for t in o.complete_trials if t.value is not None and is_finite(t.value)]
        runs = [f.value for f in o.finals if f.value is not None and is_finite(f.value)]
        if values or runs:
            trials[name], finals[name] = values, runs
    return SeedsInfo(trials, finals) if trials else None


def _std(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def plot_seed_sensitivity(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                          colors: Mapping[str, str] | None = None) -> Path | None:
    """Sensitivity to initialization next to sensitivity to the hyperparameters (issue 4.6).

    Left: per optimizer, every complete trial's value (the spread across hyperparameters,
    light dots) beside the final re-runs of the best setting (the spread across seeds, a box
    with its dots). Right: the standard deviation of each, log scale. ``None`` when no
    optimizer has a value."""
    info = _seeds_info(result)
    if info is None:
        return None
    colors = colors or optimizer_colors(result.ranked)
    fig = figure(13, 5.2)
    left, right = fig.subplots(1, 2, width_ratios=(1.7, 1))
    _draw_values(left, info, colors, spec)
    _draw_spreads(right, info, colors, spec["metric"])
    fig.suptitle(title(spec, "Sensitivity to initialization vs to the hyperparameters"),
                 fontsize=11)
    return save(fig, path)


def _draw_values(ax: Any, info: SeedsInfo, colors: Mapping[str, str],
                 spec: Mapping[str, Any]) -> None:
    rng = np.random.default_rng(0)
    names = info.names
    every = [v for n in names for v in info.trials[n] + info.finals[n]]
    for i, name in enumerate(names):
        trials, finals, color = info.trials[name], info.finals[name], colors[name]
        if trials:
            jitter = rng.uniform(-0.12, 0.12, len(trials))
            ax.scatter(i - 0.2 + jitter, trials, s=14, color=color, alpha=0.35, linewidth=0)
        if finals:
            box = ax.boxplot([finals], positions=[i + 0.2], widths=0.28,
                             patch_artist=True, showfliers=False,
                             medianprops={"color": "black", "linewidth": 1.2})
            for patch in box["boxes"]:
                patch.set_facecolor(color)
                patch.set_alpha(0.55)
            ax.scatter(np.full(len(finals), i + 0.2) + rng.uniform(-0.05, 0.05, len(finals)),
                       finals, s=12, color="black", zorder=3, linewidth=0)
    ax.set_xticks(range(len(names)), names)
    color_ticks(ax.get_xticklabels(), names, colors)
    if log_scale(every, spec["mode"]):
        set_log_y(ax, every)
    ax.set_ylabel(metric_label(spec["metric"], spec["mode"]))
    ax.set_title("per optimizer — dots: every complete trial (across hyperparameters); "
                 "box: final re-runs of the best setting (across seeds)", fontsize=9)
    style(ax)


def _draw_spreads(ax: Any, info: SeedsInfo, colors: Mapping[str, str], metric: str) -> None:
    names = info.names
    width = 0.38
    x = np.arange(len(names))
    seed_std = [_std(info.finals[n]) for n in names]
    hyper_std = [_std(info.trials[n]) for n in names]
    ax.bar(x - width / 2, [v or np.nan for v in hyper_std], width, color="0.88",
           edgecolor="0.55", hatch="///", linewidth=0.6,
           label="across hyperparameters (complete trials)")
    ax.bar(x + width / 2, [v or np.nan for v in seed_std], width,
           color=[colors[n] for n in names], label="across seeds (best setting)")
    positive = [v for v in seed_std + hyper_std if v]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=30, ha="right")
    color_ticks(ax.get_xticklabels(), names, colors, bold=False)
    ax.set_ylabel(f"standard deviation of {metric}")
    ax.set_title("spread: seeds vs hyperparameters", fontsize=9)
    ax.legend(handles=[Patch(facecolor="0.88", edgecolor="0.55", hatch="///",
                             label="across hyperparameters (complete trials)"),
                       Patch(facecolor="white", edgecolor="0.2",
                             label="across seeds (best setting; optimizer's color)")],
              fontsize=8, frameon=False)
    style(ax)
