"""Tunability: the expected best after k trials, and the shares of trial outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from matplotlib.ticker import PercentFormatter

from tuner.analysis.plots._style import (
    STATE_COLORS,
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
from tuner.analysis.statistics import report_facts
from tuner.results import is_finite

if TYPE_CHECKING:
    from tuner.results import JobResult


class TunabilityInfo(NamedTuple):
    """Per optimizer with trials: its tunability (``statistics.tunability``) and its outcome
    shares (``statistics.trial_shares``)."""

    tunability: dict[str, dict[str, Any]]
    shares: dict[str, dict[str, Any]]
    shuffles: int


def _tunability_info(result: JobResult, facts: Mapping[str, Any]) -> TunabilityInfo | None:
    per = facts["optimizers"]
    names = [n for n in result.ranked if n in per and per[n]["shares"]["n"]]
    if not names:
        return None
    shuffles = next(iter(per.values()))["tunability"]["curve"]["shuffles"]
    return TunabilityInfo({n: per[n]["tunability"] for n in names},
                          {n: per[n]["shares"] for n in names}, shuffles)


def plot_tunability(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                    facts: Mapping[str, Any] | None = None,
                    colors: Mapping[str, str] | None = None) -> Path | None:
    """Left: expected best-so-far after k trials over random trial orders, with the 25–75%
    band (protocol 5; failures score the job's worst value). Right: the share of trials that
    completed, were pruned, diverged or failed, per optimizer. ``facts`` is
    :func:`tuner.analysis.statistics.report_facts` (computed when not given)."""
    facts = facts if facts is not None else report_facts(spec, result)
    info = _tunability_info(result, facts)
    if info is None:
        return None
    metric, mode = spec["metric"], spec["mode"]
    names = list(info.shares)
    colors = colors or optimizer_colors(names)
    fig = figure(13, 5.2)
    left, right = fig.subplots(1, 2, width_ratios=(1.7, 1))
    every: list[float] = []
    for name, tun in info.tunability.items():
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
    if log_scale(every, mode):
        set_log_y(left, every)
    n_max = max(tun["n"] for tun in info.tunability.values())
    left.set_xlim(1, max(2, n_max))
    left.set_xlabel("trials k (budget)")
    left.set_ylabel(f"expected best {metric_label(metric, mode)}", fontsize=9)
    left.set_title(f"expected best after k trials ({info.shuffles} random orders; band: "
                   "25–75%; a failed or pruned trial scores the job's worst)", fontsize=9)
    left.legend(fontsize=8, frameon=False, loc="best")
    style(left, integer_x=True)

    y = np.arange(len(names))[::-1]
    start = np.zeros(len(names))
    for state, color in STATE_COLORS.items():
        shares = np.array([info.shares[n][f"share_{state}"] or 0.0 for n in names])
        bars = right.barh(y, shares, left=start, color=color, label=state, height=0.65)
        for bar, share, count in zip(bars, shares, [info.shares[n][state] for n in names],
                                     strict=True):
            if share >= 0.08:
                right.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2,
                           str(count), ha="center", va="center", fontsize=8, color="white",
                           fontweight="bold")
        start += shares
    right.set_yticks(y, names)
    color_ticks(right.get_yticklabels(), names, colors)
    right.set_xlim(0, 1)
    right.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    right.set_xlabel("share of the optimizer's trials")
    right.set_title("trial outcomes (counts on the bars)", fontsize=9)
    right.legend(fontsize=8, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.06),
                 frameon=False)
    right.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title(spec, "Tunability: how quickly tuning finds a good setting"),
                 fontsize=11)
    return save(fig, path)
