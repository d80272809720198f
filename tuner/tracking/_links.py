"""The links tuner prints to the MLflow UI, and the saved view of a finished job's Runs
table (its leaderboard): what the CLI and the API show; nothing here logs to MLflow."""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Mapping
from typing import Any

from tuner.tracking._metrics import timestamp_ms

__all__ = ["LEADERBOARD_VIEW", "VIEW_TAG", "experiment_link", "has_leaderboard_view",
           "leaderboard_view_state", "run_name", "ui_base"]

logger = logging.getLogger(__name__)


def run_name(optimizer: str, number: int, params: Mapping[str, Any]) -> str:
    """Short names first (the Run Name column is narrow): ``adam #17 lr=1.2e-03 bs=64``."""
    parts = [f"{optimizer} #{number}"]
    if "lr" in params:
        parts.append(f"lr={float(params['lr']):.1e}")
    if "batch_size" in params:
        parts.append(f"bs={params['batch_size']}")
    return " ".join(parts)


def ui_base(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000) -> str:
    """Where the MLflow UI of a tracking store is: the server itself, or `tuner ui`'s."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{host}:{port}"


#: The key of the view every finished job saves on its experiment (``Views`` in the UI).
LEADERBOARD_VIEW = "leaderboard"
#: The prefix of an experiment tag that holds a saved view of its Runs table.
VIEW_TAG = "mlflow.sharedViewState."


def experiment_link(base_url: str, experiment_id: str, *, leaderboard: bool = False) -> str:
    """The link that opens a job on its Runs table in the model-training view.

    With ``leaderboard``, it opens the job's saved view (:func:`leaderboard_view_state`): the
    job run and every optimizer run first, in rank order, with their results as columns.
    """
    link = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}"
    if leaderboard:
        # The Runs tab itself: the redirect from the experiment's page drops the view's key.
        return f"{link}/runs?workflowType=machine_learning&viewStateShareKey={LEADERBOARD_VIEW}"
    return f"{link}?workflowType=machine_learning"


def leaderboard_view_state(metric: str, *, now_ms: int | None = None) -> str:
    """The Runs-table view a finished job saves, as the MLflow 3.17 UI stores a saved view.

    The shape was read off a view saved with the UI's ``Views → Save as new view``: the tag
    ``mlflow.sharedViewState.<key>`` holds ``{"name", "createdAt", "updatedAt", "state"}``,
    ``state`` being ``"deflate;"`` + base64 of the zlib-compressed search facets and table
    state. Sorting by a metric also makes the table flat (the UI nests child runs only when
    sorted by start time), so the job run (``rank`` 0) and its optimizer runs (``rank`` 1..n)
    come first, in order, and the server sends them in the first page whatever the number of
    runs. Their results are columns whose width shows every digit.
    """
    columns = ["metrics.`rank`", f"metrics.`final_mean_{metric}`",
               f"metrics.`final_std_{metric}`", f"metrics.`best_{metric}`"]
    state = {
        "searchFilter": "",
        "orderByKey": "metrics.`rank`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        # Widths apply to the columns listed in columnOrder (the UI's applyColumnState).
        "columnOrder": ["attributes.`Run Name`", *columns, "runDateAndNestInfo", "duration"],
        "columnWidths": {"attributes.`Run Name`": 280, "metrics.`rank`": 70,
                         **{column: 170 for column in columns[1:]}},
        "runsHiddenMode": "FIRST_10_RUNS",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                  "selectedXAxisMetricKey": ""},
    }
    packed = base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    now = timestamp_ms() if now_ms is None else now_ms
    return json.dumps({"name": LEADERBOARD_VIEW, "createdAt": now, "updatedAt": now,
                       "state": f"deflate;{packed}"})


def has_leaderboard_view(tracking_uri: str, experiment_id: str) -> bool:
    """Whether a job's experiment has its saved leaderboard view (a job that succeeded)."""
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        experiment = MlflowClient(tracking_uri=tracking_uri).get_experiment(experiment_id)
    except Exception as e:  # noqa: BLE001 - the plain link still opens the job
        logger.info("cannot read experiment %s: %s", experiment_id, e)
        return False
    return f"{VIEW_TAG}{LEADERBOARD_VIEW}" in experiment.tags
