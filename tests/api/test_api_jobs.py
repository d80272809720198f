"""``/v1/jobs``: auth, validation texts, 404/409/413, pagination, cancel, trials, export."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tuner import store
from tuner.task_checks import MODULE_PATH_MESSAGE

TOKEN = "s3cret-test-token"  # the token of the `client` fixture (conftest.py)
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.integration

JOB = {"name": "api-test", "task": "digits-logreg", "optimizers": ["sgd", "adam"],
       "trials": 3, "epochs": 2}


def submit(client: TestClient, document: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=document or JOB, headers=AUTH)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def messages(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    return [item["msg"] for item in response.json()["detail"]]


# -- auth -----------------------------------------------------------------------------------


def test_writes_need_the_token(client: TestClient) -> None:
    response = client.post("/v1/jobs", json=JOB)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"] == (
        "writes need the header Authorization: Bearer <token> (the server's TUNER_API_TOKEN)"
    )
    wrong = client.post("/v1/jobs", json=JOB, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "invalid token: it is not the server's TUNER_API_TOKEN"
    basic = client.post("/v1/jobs", json=JOB, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert client.post("/v1/jobs/1/cancel").status_code == 401
    # Auth comes before validation: a stranger learns nothing about the body.
    assert client.post("/v1/jobs", json={"task": "x"}).status_code == 401
    with store.session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
        assert store.count_jobs(session) == 0


def test_submit_answers_201_with_the_stored_job(client: TestClient) -> None:
    job = submit(client)
    assert job["state"] == "queued"
    assert job["origin"] == "api"
    assert job["optimizers"] == ["sgd", "adam"]
    assert job["spec"]["trials"] == 3 and job["spec"]["sampler"] == "tpe"
    assert job["events"][0]["state"] == "queued"
    got = client.get(f"/v1/jobs/{job['id']}")
    assert got.status_code == 200
    assert got.json()["id"] == job["id"]


def test_reads_need_no_token(client: TestClient) -> None:
    submit(client)
    assert client.get("/v1/jobs").status_code == 200


# -- validation -----------------------------------------------------------------------------


def test_every_bad_field_is_named_with_the_cli_text(client: TestClient) -> None:
    bad = {**JOB, "optimizers": ["adam", "nosuchopt"], "trials": -1, "colour": "red"}
    response = client.post("/v1/jobs", json=bad, headers=AUTH)
    detail = response.json()["detail"]
    got = messages(response)
    assert "trials: got -1; input should be greater than or equal to 1" in got
    assert any(m.startswith("colour: unknown field; allowed: name, task, optimizers")
               for m in got)
    unknown = [m for m in got if m.startswith("optimizers[1]: unknown optimizer 'nosuchopt'")]
    assert unknown and unknown[0].endswith("(see tuner spaces)")
    locs = {tuple(item["loc"]) for item in detail}
    assert ("body", "trials") in locs and ("body", "colour") in locs


def test_cross_field_problems_come_together(client: TestClient) -> None:
    bad = {**JOB, "optimizers": ["nosuchopt"], "metric": "accuracy"}
    got = messages(client.post("/v1/jobs", json=bad, headers=AUTH))
    assert got[0].startswith("optimizers[0]: unknown optimizer 'nosuchopt'; available: ")
    assert got[1] == ("metric: task 'digits-logreg' does not report 'accuracy'; allowed: "
                      "val_loss, train_loss, val_accuracy")
    response = client.post("/v1/jobs", json=bad, headers=AUTH)
    assert response.json()["detail"][0]["loc"] == ["body", "optimizers", 0]


def test_a_module_path_task_is_refused_and_never_imported(client: TestClient) -> None:
    import sys

    document = {**JOB, "task": "tests_api_evil_module:build"}
    got = messages(client.post("/v1/jobs", json=document, headers=AUTH))
    assert got == [MODULE_PATH_MESSAGE]
    assert MODULE_PATH_MESSAGE == (
        "task: module paths are not accepted by the API; use a built-in or installed task "
        "(see GET /v1/tasks)"
    )
    assert "tests_api_evil_module" not in sys.modules
    # Also next to other problems, each reported once.
    got = messages(client.post("/v1/jobs", json={**document, "trials": 0}, headers=AUTH))
    assert MODULE_PATH_MESSAGE in got and len(got) == 2


def test_an_unknown_task_name_lists_what_the_api_runs(client: TestClient) -> None:
    got = messages(client.post("/v1/jobs", json={**JOB, "task": "nosuchtask"}, headers=AUTH))
    assert len(got) == 1
    assert got[0].startswith("task: unknown task 'nosuchtask'; available: cartpole-reinforce, "
                             "digits-autoencoder")
    assert "package.module:factory" not in got[0]


def test_missing_fields_and_non_mappings(client: TestClient) -> None:
    got = messages(client.post("/v1/jobs", json={"name": "x"}, headers=AUTH))
    assert "task: required field is missing" in got
    assert "optimizers: required field is missing" in got
    got = messages(client.post("/v1/jobs", json=[1, 2], headers=AUTH))
    assert got == ["a job is a mapping of fields (name, task, optimizers, ...), got list"]


def test_bodies_that_are_not_json(client: TestClient) -> None:
    headers = AUTH | {"Content-Type": "application/json"}
    got = messages(client.post("/v1/jobs", content=b"{nope", headers=headers))
    assert got[0].startswith("not valid JSON: Expecting property name")
    body = json.dumps({**JOB, "target": float("nan")}).encode()
    got = messages(client.post("/v1/jobs", content=body, headers=headers))
    assert got == ["not valid JSON: NaN is not JSON (use null, or a finite number)"]


def test_a_large_body_gets_413(client: TestClient) -> None:
    big = {**JOB, "padding": "x" * (1024 * 1024)}
    response = client.post("/v1/jobs", json=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["detail"] == "request body too large; the limit is 1048576 bytes"

    def chunks() -> Any:  # no Content-Length: the stream is counted
        for _ in range(20):
            yield b" " * 65536

    response = client.post("/v1/jobs", content=chunks(),
                           headers=AUTH | {"Content-Type": "application/json"})
    assert response.status_code == 413


def test_long_strings_are_refused(client: TestClient) -> None:
    got = messages(client.post("/v1/jobs", json={**JOB, "name": "n" * 201}, headers=AUTH))
    assert got == ["name: got '" + "n" * 201 + "'; string should have at most 200 characters"]


# -- reading --------------------------------------------------------------------------------


def test_unknown_ids_get_404(client: TestClient) -> None:
    for path in ("/v1/jobs/7", "/v1/jobs/7/trials", "/v1/jobs/7/export"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["detail"] == "no job 7 in this store (see tuner jobs)"
    response = client.post("/v1/jobs/7/cancel", headers=AUTH)
    assert response.status_code == 404


def test_pagination_and_the_state_filter(client: TestClient) -> None:
    ids = [submit(client, {**JOB, "name": f"job-{i}"})["id"] for i in range(5)]
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [job["id"] for job in page["items"]] == [ids[3], ids[2]]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=AUTH)
    cancelled = client.get("/v1/jobs", params={"state": "cancelled"}).json()
    assert cancelled["total"] == 1 and cancelled["items"][0]["id"] == ids[0]
    assert client.get("/v1/jobs", params={"state": "queued"}).json()["total"] == 4
    assert client.get("/v1/jobs", params={"state": "bogus"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 501}).status_code == 422


def test_cancel_a_queued_job_then_a_finished_one_is_409(client: TestClient) -> None:
    job = submit(client)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.json()["events"][-1]["message"] == "cancelled before it started"
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"job {job['id']} is cancelled; only a queued or running job can be cancelled"
    )


def test_cancel_a_running_job_flags_it(client: TestClient, db_url: str) -> None:
    job = submit(client)
    with store.session_scope(db_url) as session:
        assert store.claim_next_queued(session).id == job["id"]  # type: ignore[union-attr]
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["state"] == "running"
    assert response.json()["cancel_requested"] is True


def test_export_is_409_until_the_job_succeeds(client: TestClient, db_url: str) -> None:
    job = submit(client)
    response = client.get(f"/v1/jobs/{job['id']}/export")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"job {job['id']} is queued; only a succeeded job has an export"
    )
    document = {"job": job["id"], "task": "digits-logreg",
                "metric": {"name": "val_loss", "mode": "min"}, "best": "adam",
                "optimizers": {"adam": {"class": "torch.optim.Adam", "kwargs": {"lr": 0.01},
                                        "batch_size": 32, "scheduler": None}}}
    with store.session_scope(db_url) as session:
        stored = store.claim_next_queued(session)
        assert stored is not None
        store.set_result(session, stored.id, {"export": document, "leaderboard": []})
        store.set_state(session, stored, "succeeded")
    as_yaml = client.get(f"/v1/jobs/{job['id']}/export")
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert "class: torch.optim.Adam" in as_yaml.text
    as_json = client.get(f"/v1/jobs/{job['id']}/export", params={"format": "json"})
    assert as_json.json() == document
    assert client.get(f"/v1/jobs/{job['id']}/export",
                      params={"format": "python"}).status_code == 422


def test_trials_come_from_the_optuna_studies(client: TestClient, db_url: str) -> None:
    import optuna

    job = submit(client)
    assert client.get(f"/v1/jobs/{job['id']}/trials").json()["total"] == 0
    storage = optuna.storages.RDBStorage(db_url)
    for name, count in (("sgd", 3), ("adam", 2)):
        study = optuna.create_study(storage=storage, study_name=f"job-{job['id']}-{name}")
        for i in range(count):
            trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1, log=True)})
            trial.set_user_attr("tuner.epochs", i + 1)
            if i < count - 1:
                study.tell(trial, 0.5 / (i + 1))
    page = client.get(f"/v1/jobs/{job['id']}/trials").json()
    assert page["total"] == 5
    assert [(t["optimizer"], t["number"]) for t in page["items"]] == [
        ("sgd", 0), ("sgd", 1), ("sgd", 2), ("adam", 0), ("adam", 1)]
    first = page["items"][0]
    assert first["state"] == "COMPLETE" and first["value"] == 0.5
    assert set(first["params"]) == {"lr"} and first["user_attrs"] == {"tuner.epochs": 1}
    assert page["items"][2]["state"] == "RUNNING" and page["items"][2]["value"] is None
    adam = client.get(f"/v1/jobs/{job['id']}/trials",
                      params={"optimizer": "adam", "limit": 1, "offset": 1}).json()
    assert adam["total"] == 2 and [t["number"] for t in adam["items"]] == [1]
    other = client.get(f"/v1/jobs/{job['id']}/trials", params={"optimizer": "nag"})
    assert other.status_code == 422
    assert other.json()["detail"][0]["msg"] == (
        f"optimizer: 'nag' is not one of job {job['id']}'s optimizers (sgd, adam)"
    )
