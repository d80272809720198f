"""Convergence: the metric per epoch of each optimizer's final re-runs (protocol 3)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tuner.analysis.plots._style import (
    figure,
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
    from tuner.results import JobResult


class Band(NamedTuple):
    """One optimizer's final runs, per epoch: median, min and max over the complete runs."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int  # complete final runs
    left_out: int  # final runs that diverged or failed


class ConvergenceInfo(NamedTuple):
    bands: dict[str, Band]  # leaderboard order
    every: list[float]  # every value of every band: the y scale's range
    log: bool


def _final_curves(o: StoredOptimizer, metric: str) -> tuple[list[list[float]], int]:
    """The metric curves of the complete final runs, and how many final runs did not complete
    (a diverged run's last values before the NaN would swamp the band; it is counted)."""
    curves, lost = [], 0
    for final in o.finals:
        if final.state is not TrialOutcome.COMPLETE:
            lost += 1
            continue
        curve = final.curves.of(metric)
        if curve:
            curves.append([float(v) if is_finite(v) else math.nan for v in curve])
    return curves, lost


def _convergence_info(spec: Mapping[str, Any], result: JobResult) -> ConvergenceInfo | None:
    bands: dict[str, Band] = {}
    for name in result.ranked:
        curves, lost = _final_curves(result.optimizers[name], spec["metric"])
        if not curves:
            continue
        length = max(len(c) for c in curves)
        values = np.full((len(curves), length), np.nan)
        for i, c in enumerate(curves):
            values[i, : len(c)] = c
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs: diverged
            bands[name] = Band(np.nanmedian(values, axis=0), np.nanmin(values, axis=0),
                               np.nanmax(values, axis=0), len(curves), lost)
    if not bands:
        return None
    every = [float(v) for b in bands.values() for v in np.concatenate([b.low, b.high])]
    return ConvergenceInfo(bands, every, log_scale(every, spec["mode"]))


def plot_convergence(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                     colors: Mapping[str, str] | None = None) -> Path | None:
    """The validation metric per epoch of the final re-runs: median and min–max band per
    optimizer (protocol 3); runs that diverged or failed are left out and counted in the
    legend. A linear metric gets a second panel zoomed on the last half of the epochs, where
    the optimizers part. ``None`` without any complete final run."""
    info = _convergence_info(spec, result)
    if info is None:
        return None
    metric, mode = spec["metric"], spec["mode"]
    colors = colors or optimizer_colors(result.ranked)
    zoom = not info.log and spec.get("epochs", 0) >= 4
    fig = figure(12.5 if zoom else 8.5, 5.2)
    axes = fig.subplots(1, 2, width_ratios=(1, 1)) if zoom else [fig.subplots()]
    for index, ax in enumerate(axes):
        for name, band in info.bands.items():
            epochs = np.arange(1, band.median.size + 1)
            ax.fill_between(epochs, band.low, band.high, color=colors[name], alpha=0.18,
                            linewidth=0)
            label = f"{name} (n={band.runs}" + (
                f", {band.left_out} diverged/failed left out)" if band.left_out else ")")
            ax.plot(epochs, band.median, color=colors[name], linewidth=1.8,
                    label=label if index == 0 else None)
        if spec.get("target") is not None:
            ax.axhline(spec["target"], color="black", linestyle="--", linewidth=1,
                       label=f"target {spec['target']:g}" if index == 0 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label(metric, mode))
        if info.log:
            set_log_y(ax, info.every)
        style(ax, integer_x=True)
    axes[0].set_title("median of the final re-runs (band: min–max across seeds)", fontsize=10)
    if zoom:
        _zoom(axes[1], info, mode)
    axes[0].legend(fontsize=8, loc="best", frameon=False,
                   title="optimizer (seeds)", title_fontsize=8)
    fig.suptitle(title(spec, "Convergence of each optimizer's best setting"), fontsize=11)
    return save(fig, path)


def _zoom(ax: Any, info: ConvergenceInfo, mode: str) -> None:
    """The last half of the epochs, on the bulk of the late values (one straggler must not
    flatten the others)."""
    length = max(b.median.size for b in info.bands.values())
    start = max(1, length // 2)
    window = [v for b in info.bands.values()
              for v in np.concatenate([b.low[start - 1:], b.high[start - 1:]]) if np.isfinite(v)]
    if window:
        lo_q, hi_q = np.percentile(window, [2, 100]) if mode == "max" else np.percentile(
            window, [0, 98])
        pad = 0.08 * (hi_q - lo_q or abs(hi_q) or 1.0)
        ax.set_ylim(lo_q - pad, hi_q + pad)
    ax.set_xlim(start - 0.3, length + 0.3)
    ax.set_title(f"zoom: epochs {start}–{length}", fontsize=10)
