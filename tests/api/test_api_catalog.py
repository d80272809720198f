"""``/v1/search-spaces``, ``/v1/tasks``, ``/healthz``, ``/openapi.json``; the token-less mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def test_search_spaces_list_every_shipped_optimizer(client: TestClient) -> None:
    import search_spaces

    spaces = client.get("/v1/search-spaces").json()
    assert [s["name"] for s in spaces] == search_spaces.available()
    adam = next(s for s in spaces if s["name"] == "adam")
    assert adam["torch_class"] == "torch.optim.Adam"
    assert adam["params"]["lr"].startswith("LU[")


def test_tasks_list_the_builtin_ones_with_their_metrics(client: TestClient) -> None:
    tasks = {t["name"]: t for t in client.get("/v1/tasks").json()}
    assert "digits-mlp" in tasks and "rosenbrock" in tasks
    assert tasks["digits-mlp"]["metrics"] == ["val_loss", "train_loss", "val_accuracy"]


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["coordinator"] is None


def test_openapi_documents_every_path(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/trials", "/v1/jobs/{job_id}/export",
                 "/v1/search-spaces", "/v1/tasks", "/healthz"):
        assert path in paths, path
    post = paths["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSpec"}
    components = schema["components"]["schemas"]
    assert "optimizers" in components["JobSpec"]["properties"]
    assert "Resources" in components
    assert {"201", "401", "413", "422"} <= set(post["responses"])
    assert post["description"].startswith("Submit a job")


def test_without_a_token_writes_come_from_loopback_only(
    tuner_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.api import create_app
    from tuner.config import get_settings

    monkeypatch.delenv("TUNER_API_TOKEN", raising=False)
    job = {"task": "digits-logreg", "optimizers": ["adam"]}
    # Without a token the server answers to a loopback Host only (see test_api_guard.py).
    with TestClient(create_app(get_settings()), base_url="http://127.0.0.1:8000") as local:
        assert local.post("/v1/jobs", json=job).status_code == 201
    with TestClient(create_app(get_settings()), client=("203.0.113.9", 5000),
                    base_url="http://127.0.0.1:8000") as remote:
        response = remote.post("/v1/jobs", json=job)
        assert response.status_code == 401
        assert response.json()["detail"] == (
            "this server has no TUNER_API_TOKEN and accepts writes from loopback only"
        )
        assert remote.get("/v1/jobs").json()["total"] == 1
