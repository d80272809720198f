"""Cross-site writes (issue 11, point 4): a web page the user opens must not start or cancel
jobs on their server. Origins, content types and (without a token) the Host header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuner import store

TOKEN = "s3cret-test-token"  # the token of the `client` fixture (conftest.py)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB = {"name": "guard", "task": "digits-logreg", "optimizers": ["sgd"], "trials": 2,
       "epochs": 1}
EVIL = "http://evil.example"
LOOPBACK = "http://127.0.0.1:8000"

pytestmark = pytest.mark.integration


@pytest.fixture
def open_client(tuner_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A server without a token (loopback only), as `tuner serve` runs by default."""
    from tuner.api import create_app
    from tuner.config import get_settings

    monkeypatch.delenv("TUNER_API_TOKEN", raising=False)
    monkeypatch.delenv("TUNER_ALLOWED_ORIGINS", raising=False)
    with TestClient(create_app(get_settings(), bind_host="127.0.0.1"),
                    base_url=LOOPBACK) as client:
        yield client


def count(client: TestClient) -> int:
    with store.session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
        return store.count_jobs(session)


def test_a_text_plain_submit_from_a_foreign_page_is_refused(open_client: TestClient) -> None:
    import json

    body = json.dumps(JOB)
    response = open_client.post("/v1/jobs", content=body,
                                headers={"Content-Type": "text/plain", "Origin": EVIL})
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "Origin: got 'http://evil.example'; writes from a web page need its origin in "
        "TUNER_ALLOWED_ORIGINS (now: none)")
    # Without the Origin (a form post from an old browser, a proxy that drops it), the body
    # type alone is refused.
    response = open_client.post("/v1/jobs", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["detail"] == "Content-Type: got 'text/plain'; allowed: application/json"
    for media in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert open_client.post("/v1/jobs", content=body,
                                headers={"Content-Type": media}).status_code == 415
    response = open_client.post("/v1/jobs", content=b"")
    assert response.status_code == 415
    assert response.json()["detail"] == "Content-Type: got 'none'; allowed: application/json"
    assert count(open_client) == 0
    # The CLI and curl (no Origin, JSON) are unaffected, with a charset too.
    ok = open_client.post("/v1/jobs", content=body,
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


def test_a_cancel_from_a_foreign_page_is_refused(open_client: TestClient) -> None:
    job = open_client.post("/v1/jobs", json=JOB).json()
    response = open_client.post(f"/v1/jobs/{job['id']}/cancel", headers={"Origin": EVIL})
    assert response.status_code == 403
    response = open_client.post(f"/v1/jobs/{job['id']}/cancel", content=b"x=1",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert open_client.get(f"/v1/jobs/{job['id']}").json()["state"] == "queued"
    # The server's own pages (its /docs) have its origin.
    response = open_client.post(f"/v1/jobs/{job['id']}/cancel", headers={"Origin": LOOPBACK})
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"


def test_dns_rebinding_is_refused_without_a_token(open_client: TestClient) -> None:
    """evil.example resolving to 127.0.0.1: same origin for the browser, so the Origin check
    alone would let it through; the Host names a server that is not this one."""
    headers = {"Host": "evil.example:8000"}
    for response in (open_client.get("/v1/jobs", headers=headers),
                     open_client.post("/v1/jobs", json=JOB,
                                      headers=headers | {"Origin": "http://evil.example:8000"})):
        assert response.status_code == 403
        assert response.json()["detail"] == (
            "Host: got 'evil.example:8000'; this server has no TUNER_API_TOKEN and answers to "
            "loopback addresses only (localhost, 127.0.0.1, ::1); set TUNER_API_TOKEN to serve "
            "other names")
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "127.0.0.2:9"):
        assert open_client.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
    assert count(open_client) == 0


def test_allowed_origins_may_write_and_get_cors_answers(
    tuner_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tuner.api import create_app
    from tuner.config import get_settings

    monkeypatch.setenv("TUNER_API_TOKEN", TOKEN)
    monkeypatch.setenv("TUNER_ALLOWED_ORIGINS", "https://ui.example, http://localhost:3000")
    with TestClient(create_app(get_settings()), base_url="http://tuner.internal:8000") as c:
        # With a token the Host is not checked (the server may sit behind any name).
        assert c.get("/v1/jobs").status_code == 200
        preflight = c.options("/v1/jobs", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://ui.example"
        assert preflight.headers["access-control-allow-methods"] == "GET, OPTIONS, POST"
        assert preflight.headers["access-control-allow-headers"] == "Authorization, Content-Type"
        created = c.post("/v1/jobs", json=JOB,
                         headers=AUTH | {"Origin": "https://ui.example"})
        assert created.status_code == 201, created.text
        assert created.headers["access-control-allow-origin"] == "https://ui.example"
        refused = c.options("/v1/jobs", headers={"Origin": EVIL,
                                                 "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        response = c.post("/v1/jobs", json=JOB, headers=AUTH | {"Origin": EVIL})
        assert response.status_code == 403
        assert response.json()["detail"] == (
            "Origin: got 'http://evil.example'; writes from a web page need its origin in "
            "TUNER_ALLOWED_ORIGINS (now: http://localhost:3000, https://ui.example)")
        # Reads carry no CORS header for a foreign origin: its page cannot read the answer.
        read = c.get("/v1/jobs", headers={"Origin": EVIL})
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_options_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.options("/v1/jobs")
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    assert client.options("/v1/jobs/1/cancel").headers["allow"] == "OPTIONS, POST"
    assert client.options("/v1/jobs/1").headers["allow"] == "GET, OPTIONS"
    assert client.options("/nowhere").status_code == 404


def test_a_bad_allowed_origin_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuner.config import get_settings
    from tuner.errors import TunerError

    monkeypatch.setenv("TUNER_ALLOWED_ORIGINS", "https://ok.example,ui.example/path")
    with pytest.raises(TunerError) as error:
        get_settings()
    assert str(error.value) == (
        "TUNER_ALLOWED_ORIGINS: got 'ui.example/path'; allowed: origins such as "
        "https://ui.example or http://localhost:3000, comma-separated (no path)")
