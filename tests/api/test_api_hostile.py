"""Hostile requests found by fuzzing (issue 11): each is a 4xx naming what is wrong, on SQLite
and PostgreSQL, and nothing is stored."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tuner import store

TOKEN = "s3cret-test-token"  # the token of the `client` fixture (conftest.py)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
JOB = {"name": "hostile", "task": "digits-logreg", "optimizers": ["sgd"], "trials": 2,
       "epochs": 1}

pytestmark = pytest.mark.integration


def problems(response: object) -> list[tuple[list[object], str]]:
    assert response.status_code == 422, response.text  # type: ignore[attr-defined]
    return [(item["loc"], item["msg"]) for item in response.json()["detail"]]  # type: ignore[attr-defined]


def stored(client: TestClient) -> int:
    with store.session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
        return store.count_jobs(session)


@pytest.mark.parametrize("job_id", ["9223372036854775808", "2147483648", "99999999999999999999"])
@pytest.mark.parametrize("suffix", ["", "/trials", "/export"])
def test_out_of_range_job_ids_are_422_naming_job_id(client: TestClient, job_id: str,
                                                   suffix: str) -> None:
    assert problems(client.get(f"/v1/jobs/{job_id}{suffix}")) == [(
        ["path", "job_id"],
        f"job_id: got '{job_id}'; input should be less than or equal to 2147483647",
    )]


def test_out_of_range_ids_on_cancel_and_zero(client: TestClient) -> None:
    response = client.post("/v1/jobs/9223372036854775808/cancel", headers=AUTH)
    assert problems(response) == [(
        ["path", "job_id"],
        "job_id: got '9223372036854775808'; input should be less than or equal to 2147483647",
    )]
    assert problems(client.get("/v1/jobs/0")) == [(
        ["path", "job_id"], "job_id: got '0'; input should be greater than or equal to 1")]
    assert problems(client.get("/v1/jobs/x")) == [(
        ["path", "job_id"],
        "job_id: got 'x'; input should be a valid integer, unable to parse string as an integer",
    )]


def test_the_largest_id_is_a_plain_404(client: TestClient) -> None:
    response = client.get("/v1/jobs/2147483647")
    assert response.status_code == 404
    assert response.json()["detail"] == "no job 2147483647 in this store (see tuner jobs)"


def test_huge_offsets_are_422_naming_offset(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=JOB, headers=AUTH).json()
    for url in ("/v1/jobs", f"/v1/jobs/{job['id']}/trials"):
        assert problems(client.get(url, params={"offset": "100000000000000000000"})) == [(
            ["query", "offset"],
            "offset: got '100000000000000000000'; input should be less than or equal to "
            "2147483647",
        )]
    assert client.get("/v1/jobs", params={"offset": 2**31 - 1}).json()["items"] == []


def test_a_body_nested_thousands_deep(client: TestClient) -> None:
    body = '{"a":' * 3000 + "1" + "}" * 3000
    assert problems(client.post("/v1/jobs", content=body, headers=AUTH)) == [
        (["body"], "nested deeper than 32 levels; a job is a few levels deep")]
    # Deeper than the limit but within the parser's stack: the field that goes too deep.
    nested = {**JOB, "space_overrides": {"sgd": {"lr": {"low": json.loads(
        '{"a":' * 40 + "1" + "}" * 40)}}}}
    assert problems(client.post("/v1/jobs", json=nested, headers=AUTH)) == [
        (["body", "space_overrides", "sgd", "lr"],
         "space_overrides.sgd.lr: nested deeper than 32 levels; a job is a few levels deep")]
    assert stored(client) == 0


def test_nul_characters_are_refused_before_the_database(client: TestClient) -> None:
    got = problems(client.post("/v1/jobs", json={**JOB, "name": "x\x00y"}, headers=AUTH))
    assert got == [(["body", "name"],
                    "name: contains a NUL character (\\x00); text fields cannot hold it")]
    got = problems(client.post("/v1/jobs", json={**JOB, "optimizers": ["sgd", "a\x00"]},
                               headers=AUTH))
    assert got == [(["body", "optimizers", 1],
                    "optimizers[1]: contains a NUL character (\\x00); text fields cannot "
                    "hold it")]
    assert stored(client) == 0


def test_query_problems_say_query(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=JOB, headers=AUTH).json()
    got = problems(client.get(f"/v1/jobs/{job['id']}/trials", params={"optimizer": "adam"}))
    assert got == [(["query", "optimizer"],
                    f"optimizer: 'adam' is not one of job {job['id']}'s optimizers (sgd)")]
    got = problems(client.get("/v1/jobs", params={"state": "nope"}))
    assert got == [(["query", "state"], "state: got 'nope'; input should be 'queued', "
                    "'running', 'succeeded', 'failed' or 'cancelled'")]


def test_the_openapi_document_lists_valid_names(client: TestClient) -> None:
    import search_spaces
    from tuner.task import task_names

    job = client.get("/openapi.json").json()["components"]["schemas"]["JobSpec"]
    assert job["properties"]["task"]["enum"] == task_names()
    assert job["properties"]["optimizers"]["items"]["enum"] == search_spaces.available()
    assert "val_accuracy" in job["properties"]["metric"]["examples"]
