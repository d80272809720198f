"""The landscape figure knows the built-in landscape tasks without importing them
(tuner.analysis imports no task): its table must be the tasks' own."""

from __future__ import annotations

import numpy as np

from tuner.analysis.plots import landscape
from workers.tasks import landscapes


def test_the_figure_draws_the_tasks_functions() -> None:
    x, y = np.meshgrid(np.linspace(-3, 3, 13), np.linspace(-2, 4, 13))
    assert np.allclose(landscape.FUNCTIONS["rosenbrock"](x, y), landscapes.rosenbrock_value(x, y))
    assert np.allclose(landscape.FUNCTIONS["rastrigin"](x, y), landscapes.rastrigin_value(x, y))


def test_the_figure_starts_and_ends_where_the_tasks_do() -> None:
    rosenbrock, rastrigin = landscape.LANDSCAPES["rosenbrock"], landscape.LANDSCAPES["rastrigin"]
    assert (rosenbrock.minimum, rosenbrock.start) == (landscapes.ROSENBROCK_MINIMUM,
                                                      landscapes.ROSENBROCK_START)
    assert (rastrigin.minimum, rastrigin.start) == (landscapes.RASTRIGIN_MINIMUM,
                                                    landscapes.RASTRIGIN_START)
    # Every seed starts within the task's perturbation of the start drawn.
    for seed in (0, 42, 43):
        model = landscapes.rosenbrock(seed).model
        assert isinstance(model, landscapes.Landscape)
        sx, sy = model.position
        assert abs(sx - rosenbrock.start[0]) <= landscapes.PERTURBATION + 1e-6
        assert abs(sy - rosenbrock.start[1]) <= landscapes.PERTURBATION + 1e-6
