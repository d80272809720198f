"""The look every figure shares: colors per optimizer, figure and axes style, log scales."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tuner.results import is_finite

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DPI = 120

# One color per optimizer, the same in every figure and every job: the classic seven in the
# order people learn them, then the modern ones (tab10, then Dark2 for the rest).
_CANONICAL = ("gd", "sgd", "minibatch", "momentum", "nag", "rmsprop", "adam", "adamw", "nadam",
              "radam", "adagrad", "adadelta", "adamax")
_PALETTE = ("#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#9467bd", "#ff7f0e", "#d62728",
            "#2ca02c", "#8c564b", "#e377c2", "#1b9e77", "#a6761d", "#66a61e", "#e7298a",
            "#7570b3", "#d95f02", "#e6ab02")

#: Trial outcomes, in the share bars.
STATE_COLORS = {"complete": "#4c9a5f", "pruned": "#e8b04b", "diverged": "#c8413b",
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


def figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def title(spec: Mapping[str, Any], what: str) -> str:
    return f"{what}\n{spec.get('name', 'job')} · task {spec.get('task')} · metric {spec['metric']}"


def log_scale(values: Sequence[float], mode: str) -> bool:
    """Log y for a non-negative metric to minimize whose positive values span more than two
    decades (losses, distances to a minimum); accuracies stay linear."""
    finite = [v for v in values if is_finite(v)]
    positive = [v for v in finite if v > 0]
    return (mode == "min" and bool(positive) and min(finite) >= 0
            and max(positive) / min(positive) > 100)


def set_log_y(ax: Axes, values: Sequence[float]) -> None:
    """Log y; symmetric-log below the smallest positive value when some values are exactly 0
    (a run that reached the minimum exactly must stay visible)."""
    finite = [v for v in values if is_finite(v)]
    if any(v == 0 for v in finite):
        floor = min(v for v in finite if v > 0)
        ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(floor)))
    else:
        ax.set_yscale("log")


def style(ax: Axes, *, integer_x: bool = False) -> None:
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def grid(n: int, ncols_max: int = 4) -> tuple[int, int]:
    """Rows and columns of a grid of ``n`` panels, at most ``ncols_max`` a row."""
    ncols = min(ncols_max, max(1, n))
    return math.ceil(n / ncols), ncols


def color_ticks(labels: Sequence[Any], names: Sequence[str], colors: Mapping[str, str], *,
                bold: bool = True) -> None:
    """Each tick label of an optimizer in its color."""
    for tick, name in zip(labels, names, strict=True):
        tick.set_color(colors[name])
        if bold:
            tick.set_fontweight("bold")
