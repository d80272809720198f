"""``/v1/code`` and jobs that ship code: the upload, its checks, the job's ``code`` field."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import TOKEN
from tuner import store
from tuner.code import sha256_of

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZIP = {"Content-Type": "application/zip"} | AUTH
JOB = {"task": "mymodel.tasks:build", "optimizers": ["adam"], "trials": 2}


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


CODE = zip_of({"mymodel/__init__.py": b"", "mymodel/tasks.py": b"def build(seed): ...\n"})


def test_upload_stores_the_archive_once_by_its_hash(client: TestClient, db_url: str) -> None:
    first = client.post("/v1/code", content=CODE, headers=ZIP)
    again = client.post("/v1/code", content=CODE, headers=ZIP)

    assert first.status_code == 201, first.text
    assert again.status_code == 200
    sha = sha256_of(CODE)
    assert first.json()["sha256"] == again.json()["sha256"] == sha
    assert first.json()["size"] == len(CODE)
    assert first.headers["location"] == f"/v1/code/{sha}"
    assert client.get(f"/v1/code/{sha}").json()["size"] == len(CODE)
    with store.session_scope(db_url) as session:
        assert store.code_bytes(session, sha) == CODE


def test_a_job_with_its_code_may_name_a_module_and_nothing_imports_it(
    client: TestClient,
) -> None:
    sha = client.post("/v1/code", content=CODE, headers=ZIP).json()["sha256"]

    response = client.post("/v1/jobs", json=JOB | {"code": sha,
                                                  "requirements": ["termcolor>=2"]},
                           headers=AUTH)

    assert response.status_code == 201, response.text
    assert response.json()["spec"]["code"] == sha
    assert response.json()["spec"]["requirements"] == ["termcolor>=2"]
    import sys
    assert "mymodel" not in sys.modules


def test_a_job_naming_code_the_server_does_not_have_is_refused(client: TestClient) -> None:
    missing = "ab" * 32
    response = client.post("/v1/jobs", json=JOB | {"code": missing, "trials": 0},
                           headers=AUTH)

    assert response.status_code == 422
    assert [item["msg"] for item in response.json()["detail"]] == [
        "trials: got 0; input should be greater than or equal to 1",
        f"code: no code archive {missing} on this server; upload it first with "
        "POST /v1/code (tuner submit --code DIR does both)",
    ]
    assert response.json()["detail"][1]["loc"] == ["body", "code"]


def test_bad_code_and_requirements_fields_are_named(client: TestClient) -> None:
    response = client.post("/v1/jobs", json=JOB | {"code": "../etc/passwd",
                                                  "requirements": ["ok>=1", "not ok!"]},
                           headers=AUTH)

    assert response.status_code == 422
    messages = [item["msg"] for item in response.json()["detail"]]
    assert messages[0] == (
        "code: got '../etc/passwd'; allowed: the SHA-256 (64 lowercase hex digits) of a code "
        "archive uploaded with POST /v1/code (tuner submit --code DIR sends it)")
    assert messages[1].startswith("requirements[1]: 'not ok!' is not a pip requirement (")
    assert messages[1].endswith("); allowed: a PEP 508 requirement such as 'termcolor>=2' "
                                "or 'pkg==1.0'")
    assert len(messages) == 2


def test_a_module_path_without_code_is_still_refused(client: TestClient) -> None:
    response = client.post("/v1/jobs", json=JOB, headers=AUTH)

    assert response.status_code == 422
    assert [item["msg"] for item in response.json()["detail"]] == [
        "task: module paths are not accepted by the API; use a built-in or installed task "
        "(see GET /v1/tasks)"]


def test_upload_needs_the_token_and_a_zip_content_type(client: TestClient) -> None:
    response = client.post("/v1/code", content=CODE, headers={"Content-Type": "application/zip"})
    assert response.status_code == 401

    response = client.post("/v1/code", content=CODE,
                           headers=AUTH | {"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["detail"] == ("code: got Content-Type 'text/plain'; send the zip "
                                         "archive as application/zip")


@pytest.mark.parametrize(("entries", "detail"), [
    ({"../../evil.py": b""}, "code: entry '../../evil.py': '..' is not allowed in a path (it "
                             "would write outside the working directory)"),
    ({"/abs.py": b""}, "code: entry '/abs.py': absolute paths are not allowed"),
])
def test_unsafe_archives_get_422(client: TestClient, entries: dict[str, bytes],
                                 detail: str) -> None:
    response = client.post("/v1/code", content=zip_of(entries), headers=ZIP)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


def test_not_a_zip_gets_422(client: TestClient) -> None:
    response = client.post("/v1/code", content=b"hello", headers=ZIP)
    assert response.status_code == 422
    assert response.json() == {"detail": "code: not a zip archive (File is not a zip file)"}


def test_the_code_limit_is_the_servers_setting_not_the_job_body_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Over the 1 MiB of a job document, under the default 50 MiB of code.
    big = zip_of({"weights.bin": os.urandom(1_200_000)})
    assert client.post("/v1/code", content=big, headers=ZIP).status_code == 201

    client.app.state.settings.max_code_mb = 1  # type: ignore[attr-defined]
    response = client.post("/v1/code", content=big, headers=ZIP)
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "code: the archive is larger than this server's limit of 1 MiB (TUNER_MAX_CODE_MB); "
        "leave data sets out of the code folder")
    bomb = zip_of({"zeros.bin": bytes(11 * 2**20)})
    response = client.post("/v1/code", content=bomb, headers=ZIP)
    assert response.status_code == 413
    assert response.json()["detail"] == ("code: the archive unpacks to 11.0 MiB, over the "
                                         "limit of 10.0 MiB (10 x TUNER_MAX_CODE_MB)")


def test_an_unknown_archive_is_404(client: TestClient) -> None:
    response = client.get(f"/v1/code/{'0' * 64}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no code archive {'0' * 64} on this server"}
