"""The report's figures: matplotlib PNGs drawn from a job's stored result. Pure: no Ray, no
MLflow, no study storage, no task.

As in Optuna's ``optuna.visualization``, each figure is two steps: a private ``_x_info``
gathers its data from the :class:`~tuner.results.JobResult` into a small ``NamedTuple``, and
``plot_x(spec, result, path)`` draws it, writes one PNG to ``path`` and returns it, or
returns ``None`` when the job has nothing to draw (no final runs, not a landscape task, ...).
``spec`` is the stored job spec (``JobSpec.model_dump(mode="json")``). Figures are built on
:class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no global state, no GUI
backend, safe in a server thread. Each optimizer keeps its color in every figure
(:func:`optimizer_colors`); the shared look is in ``_style``.

Example::

    from tuner.analysis import plots
    from tuner.results import JobResult

    plots.plot_convergence(job.spec, JobResult.from_dict(job.result), Path("convergence.png"))
"""

from tuner.analysis.plots._style import DPI, metric_label, optimizer_colors
from tuner.analysis.plots.convergence import plot_convergence
from tuner.analysis.plots.importance import plot_importance
from tuner.analysis.plots.landscape import LANDSCAPES, landscape_of, plot_landscape
from tuner.analysis.plots.learning_rate import plot_lr_range, plot_lr_sensitivity
from tuner.analysis.plots.seeds import plot_seed_sensitivity
from tuner.analysis.plots.tunability import plot_tunability

__all__ = [
    "DPI",
    "LANDSCAPES",
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
