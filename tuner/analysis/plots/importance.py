"""Hyperparameter importance per optimizer, as :mod:`tuner.analysis.importance` found it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tuner.analysis.plots._style import figure, grid, optimizer_colors, save, style, title

if TYPE_CHECKING:
    from tuner.analysis.importance import Importances
    from tuner.results import JobResult


class ImportanceInfo(NamedTuple):
    """Per optimizer (leaderboard order): ``(labels, importances)`` ascending, or a note."""

    panels: dict[str, tuple[list[str], list[float]] | str]


def _importance_info(result: JobResult, found: Importances) -> ImportanceInfo | None:
    panels: dict[str, tuple[list[str], list[float]] | str] = {}
    for name in [n for n in result.ranked if n in found]:
        value = found[name]
        if isinstance(value, str) or not value:
            panels[name] = value if isinstance(value, str) else "no tuned parameter"
            continue
        params = sorted(value, key=lambda p: value[p])
        panels[name] = ([p.replace("one_minus_", "1 − ") for p in params],
                        [value[p] for p in params])
    return ImportanceInfo(panels) if panels else None


def plot_importance(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                    importances: Importances,
                    colors: Mapping[str, str] | None = None) -> Path | None:
    """Hyperparameter importance per optimizer (``importances``: Optuna's fANOVA evaluator on
    each study, :func:`tuner.analysis.importance.job_importances`); an optimizer without
    them (fewer than 3 complete trials, ...) gets its note instead of bars. ``None`` when no
    optimizer has a study."""
    info = _importance_info(result, importances)
    if info is None:
        return None
    colors = colors or optimizer_colors(result.ranked)
    rows, cols = grid(len(info.panels), 4)
    fig = figure(3.4 * cols + 0.4, 2.6 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True).ravel()
    for ax, (name, panel) in zip(axes, info.panels.items(), strict=False):
        ax.set_title(name, fontsize=10, color=colors[name], fontweight="bold")
        style(ax)
        if isinstance(panel, str):
            ax.text(0.5, 0.5, panel, ha="center", va="center", fontsize=8.5,
                    transform=ax.transAxes, wrap=True, color="0.35")
            ax.set_yticks([])
            continue
        labels, values = panel
        ax.barh(labels, values, color=colors[name], height=0.6)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[len(info.panels):]:
        ax.set_visible(False)
    for ax in axes[: len(info.panels)]:
        ax.set_xlabel("importance (fANOVA, sums to 1)", fontsize=8)
        ax.tick_params(labelbottom=True)
    fig.suptitle(title(spec, "Hyperparameter importance per optimizer (complete trials)"),
                 fontsize=11)
    return save(fig, path)
