"""``GET /v1/jobs/{id}/report/facts``: the report's tunability and sensitivity facts as JSON,
the same :class:`tuner.views.ReportFacts` the local ``tuner report`` prints."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.stored_results import stored_optimizers
from tuner import store
from tuner.results import JobResult
from tuner.spec import parse_job
from tuner.views import ReportFacts, report_facts

JOB: dict[str, Any] = {
    "name": "facts", "task": "digits-logreg", "optimizers": ["sgd", "adam"], "trials": 4,
    "epochs": 2, "metric": "val_accuracy", "mode": "max", "final_seeds": 3, "target": 0.95,
}


@pytest.fixture
def jobs(client: TestClient, db_url: str) -> dict[str, Any]:
    """A succeeded job with a stored result, and a queued one."""
    spec = parse_job(JOB).model_dump(mode="json")
    result = {"optimizers": stored_optimizers(), "leaderboard": [], "seconds": 12.0,
              "export": {}}
    with store.session_scope(db_url) as session:
        done = store.create_job(session, name="facts", task=JOB["task"], spec=spec,
                                state="running")
        store.set_result(session, done.id, result)
        store.set_state(session, done, "succeeded")
        queued = store.create_job(session, name="later", task=JOB["task"], spec=spec)
        return {"done": done.id, "queued": queued.id, "spec": spec, "result": result}


def test_a_succeeded_jobs_facts(client: TestClient, jobs: dict[str, Any]) -> None:
    answer = client.get(f"/v1/jobs/{jobs['done']}/report/facts")

    assert answer.status_code == 200, answer.text
    facts = answer.json()
    assert list(facts["optimizers"]) == ["sgd", "adam"]
    sgd, adam = facts["optimizers"]["sgd"], facts["optimizers"]["adam"]
    assert sgd["shares"] == {"complete": 3, "pruned": 1, "diverged": 0, "failed": 0, "n": 4,
                             "share_complete": 0.75, "share_pruned": 0.25,
                             "share_diverged": 0.0, "share_failed": 0.0}
    assert adam["shares"]["share_diverged"] == 0.5
    assert sgd["tunability"]["n"] == 4 and sgd["tunability"]["best"] == 0.975
    assert sgd["tunability"]["k_within_1pct"] == 2
    assert "curve" not in sgd["tunability"]  # drawn in tunability.png, not sent
    assert sgd["seeds"]["n"] == 3 and sgd["seeds"]["median"] == 0.975
    assert sgd["hyper"]["n"] == 3 and sgd["hyper"]["min"] == 0.95
    assert sgd["speed"] == {"epoch": 2.0, "seconds": pytest.approx(1.1), "reached": 3,
                            "runs": 3}
    assert sgd["seconds_per_epoch"] == pytest.approx(0.55)
    assert facts["worst"] == 0.5  # the job's worst trial value: a failed trial's score
    assert ("adam: 50% of its trials diverged; its learning-rate range reaches far into "
            "instability") in facts["warnings"]
    # What the local store computes, typed alike.
    local = report_facts(jobs["spec"], JobResult.from_dict(jobs["result"]))
    assert ReportFacts.model_validate(facts) == local
    assert facts == local.model_dump(mode="json")


def test_facts_need_a_succeeded_job(client: TestClient, jobs: dict[str, Any]) -> None:
    queued = client.get(f"/v1/jobs/{jobs['queued']}/report/facts")
    assert queued.status_code == 409
    assert queued.json() == {
        "detail": f"job {jobs['queued']} is queued; a report needs a succeeded job"}

    missing = client.get("/v1/jobs/999/report/facts")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no job 999 in this store (see tuner jobs)"}


def test_the_facts_are_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    get = schema["paths"]["/v1/jobs/{job_id}/report/facts"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReportFacts"}
    assert {"404", "409"} <= set(get["responses"])
    assert {"optimizers", "warnings", "worst"} <= set(
        schema["components"]["schemas"]["ReportFacts"]["properties"])


def test_a_number_that_is_not_finite_is_answered_as_null() -> None:
    facts = ReportFacts.model_validate({"optimizers": {}, "warnings": [],
                                        "worst": float("nan")})
    assert facts.worst is None
    assert ReportFacts.model_validate({"optimizers": {}, "warnings": [],
                                       "worst": float("inf")}).model_dump()["worst"] is None
