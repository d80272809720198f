"""The links tuner prints to the MLflow UI, and the saved view a finished job leaves."""

from __future__ import annotations

import base64
import json
import zlib

from tuner.tracking import LEADERBOARD_VIEW, experiment_link, leaderboard_view_state


def test_the_plain_and_the_leaderboard_links() -> None:
    assert experiment_link("http://h:5000/", "3") == (
        "http://h:5000/#/experiments/3?workflowType=machine_learning")
    assert experiment_link("http://h:5000", "3", leaderboard=True) == (
        "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"
        f"&viewStateShareKey={LEADERBOARD_VIEW}")


def test_the_view_has_the_shape_the_ui_saves() -> None:
    """What MLflow 3.17.2's "Views → Save as new view" wrote for a view sorted by rank with
    three metric columns (read off the experiment's tag), with our columns and widths."""
    tag = json.loads(leaderboard_view_state("val_loss", now_ms=1_796_056_857_807))

    assert set(tag) == {"name", "createdAt", "updatedAt", "state"}
    assert tag["name"] == LEADERBOARD_VIEW and tag["createdAt"] == 1_796_056_857_807
    scheme, _, packed = tag["state"].partition(";")
    assert scheme == "deflate"
    state = json.loads(zlib.decompress(base64.b64decode(packed)))
    saved_by_the_ui = {
        "searchFilter", "orderByKey", "orderByAsc", "startTime", "lifecycleFilter",
        "datasetsFilter", "modelVersionFilter", "selectedColumns", "columnOrder",
        "columnWidths", "runsHiddenMode", "viewMaximized", "runListHidden",
        "isAccordionReordered", "useGroupedValuesInCharts", "hideEmptyCharts", "groupBy",
        "groupsExpanded", "globalLineChartConfig"}
    assert set(state) == saved_by_the_ui
    assert state["orderByKey"] == "metrics.`rank`" and state["orderByAsc"] is True
    assert state["selectedColumns"] == [
        "metrics.`rank`", "metrics.`final_mean_val_loss`", "metrics.`final_std_val_loss`",
        "metrics.`best_val_loss`"]
    assert set(state["columnWidths"]) <= set(state["columnOrder"])
