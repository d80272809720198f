"""Two-parameter landscapes: each optimizer's best path on the function's contour.

The analysis imports no task: what the figure needs of a landscape (the function, its
minimum, the start point, the window) comes with the job's result (``JobResult.landscape``)
or, for the two textbook functions the built-in tasks train on, from :data:`LANDSCAPES`
(Rosenbrock 1960, Rastrigin 1974; ``tests/unit/test_landscape_plot.py`` checks they are the
tasks' own). The positions are the ones each epoch report of the task carries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from matplotlib.colors import LogNorm

from tuner.analysis.plots._style import figure, optimizer_colors, save, title
from tuner.results import LandscapeInfo, StoredOptimizer, is_finite

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tuner.results import JobResult


def _rosenbrock(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(1 - x)^2 + 100 (y - x^2)^2``."""
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def _rastrigin(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """``20 + x^2 - 10 cos(2 pi x) + y^2 - 10 cos(2 pi y)``."""
    return 20.0 + x**2 - 10.0 * np.cos(2 * np.pi * x) + y**2 - 10.0 * np.cos(2 * np.pi * y)


#: The functions a landscape can be drawn on, by name.
FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "rosenbrock": _rosenbrock, "rastrigin": _rastrigin,
}

#: The built-in landscape tasks: Rosenbrock's valley from its classic start (-1.2, 1), and
#: Rastrigin on [-5.12, 5.12]^2.
LANDSCAPES: dict[str, LandscapeInfo] = {
    "rosenbrock": LandscapeInfo("rosenbrock", minimum=(1.0, 1.0), start=(-1.2, 1.0),
                                limit=3.0, extra_y=2.0),
    "rastrigin": LandscapeInfo("rastrigin", minimum=(0.0, 0.0), start=(2.5, -2.2),
                               limit=5.12),
}


def landscape_of(task: str) -> str | None:
    """``"rosenbrock"`` or ``"rastrigin"`` for the two-parameter landscape tasks, else ``None``."""
    name = task.rsplit(":", 1)[-1] if ":" in task else task
    if ":" in task and not task.startswith("workers.tasks.landscapes"):
        return None
    return name if name in LANDSCAPES else None


class LandscapeFigure(NamedTuple):
    landscape: LandscapeInfo
    paths: dict[str, list[tuple[float, float]]]  # from the start, one point per epoch end
    window: tuple[float, float, float, float]  # x_lo, x_hi, y_lo, y_hi


def _best_path(o: StoredOptimizer, mode: str) -> tuple[list[tuple[float, float]], int | None]:
    """The positions of the optimizer's best final run (else of its best trial) and the
    run's seed (``None`` for the trial)."""
    finals = [f for f in o.finals if f.value is not None and is_finite(f.value)
              and f.curves.positions]
    if finals:
        best = (min if mode == "min" else max)(finals, key=lambda f: f.value or 0.0)
        positions, seed = best.curves.positions, best.seed
    else:
        positions, seed = o.best_curves.positions, None
    return [p for p in positions if p is not None], seed


def _landscape_info(spec: Mapping[str, Any], result: JobResult) -> LandscapeFigure | None:
    kind = landscape_of(str(spec.get("task", "")))
    landscape = result.landscape or (LANDSCAPES[kind] if kind else None)
    if landscape is None or landscape.function not in FUNCTIONS:
        return None
    paths: dict[str, list[tuple[float, float]]] = {}
    for name in result.ranked:
        points, seed = _best_path(result.optimizers[name], spec["mode"])
        if points:
            paths[name] = [landscape.start_of(seed), *points]
    # The window: the start, the minimum and the paths, within the landscape's bounds.
    start, minimum, limit = landscape.start, landscape.minimum, landscape.limit
    xs = [start[0], minimum[0]] + [p[0] for ps in paths.values() for p in ps]
    ys = [start[1], minimum[1]] + [p[1] for ps in paths.values() for p in ps]
    x_lo, x_hi = max(min(xs), -limit), min(max(xs), limit)
    y_lo, y_hi = max(min(ys), -limit), min(max(ys), limit + landscape.extra_y)
    pad_x, pad_y = 0.15 * (x_hi - x_lo) + 0.2, 0.15 * (y_hi - y_lo) + 0.2
    return LandscapeFigure(landscape, paths,
                           (x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y))


def plot_landscape(spec: Mapping[str, Any], result: JobResult, path: Path, *,
                   colors: Mapping[str, str] | None = None) -> Path | None:
    """The path of each optimizer's best final run on the contour of the landscape (epoch
    ends, from the task's start point: each seed's start lies within a hair of it);
    log-spaced levels for Rosenbrock; the minimum starred. ``None`` unless the task is a
    two-parameter landscape."""
    info = _landscape_info(spec, result)
    if info is None:
        return None
    kind, minimum = info.landscape.function, info.landscape.minimum
    colors = colors or optimizer_colors(result.ranked)
    x_lo, x_hi, y_lo, y_hi = info.window
    gx, gy = np.meshgrid(np.linspace(x_lo, x_hi, 400), np.linspace(y_lo, y_hi, 400))
    z = np.asarray(FUNCTIONS[kind](gx, gy))
    fig = figure(8.8, 6.6)
    ax = fig.subplots()
    log = kind == "rosenbrock"  # the valley floor spans decades below the walls
    if log:
        levels = np.logspace(-1, math.log10(max(float(z.max()), 10.0)), 18)
        filled = ax.contourf(gx, gy, np.maximum(z, levels[0]), levels=levels, norm=LogNorm(),
                             cmap="Greys_r", alpha=0.55, extend="min")
        ax.contour(gx, gy, z, levels=levels, colors="0.45", linewidths=0.4, norm=LogNorm())
        ticks = [10.0**e for e in range(-1, math.ceil(math.log10(levels[-1])) + 1)
                 if 10.0**e <= levels[-1]]
    else:
        levels = np.linspace(0, float(z.max()), 16)
        filled = ax.contourf(gx, gy, z, levels=levels, cmap="Greys_r", alpha=0.55)
        ax.contour(gx, gy, z, levels=levels, colors="0.45", linewidths=0.4)
        ticks = None
    bar = fig.colorbar(filled, ax=ax, shrink=0.85, pad=0.01, ticks=ticks)
    bar.set_label(f"{kind}(x, y)" + (" (log scale)" if log else ""))
    for name, points in info.paths.items():
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
    fig.suptitle(title(spec, f"{kind.capitalize()}: path of each optimizer's best run"),
                 fontsize=11)
    return save(fig, path)
