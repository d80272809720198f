"""Schemathesis over the OpenAPI document (issue 11): generated requests to every operation,
with and without the token, must never get a server error (5xx) on SQLite or PostgreSQL.

Bounded: a fixed number of examples per operation (``FUZZ_EXAMPLES``, 40 by default), no
stateful phase, derandomized so that a run is repeatable. The app has no coordinator (as in
the other API tests): a submitted job is stored ``queued`` and never trains.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

TOKEN = "s3cret-test-token"  # the token of the `client` fixture (conftest.py)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))

pytestmark = pytest.mark.integration


@pytest.fixture
def app(client: TestClient) -> Iterator[Any]:
    yield client.app


def test_no_generated_request_gets_a_server_error(app: Any) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    seen: Counter[tuple[str, int]] = Counter()
    # POST /v1/code takes a zip archive, which Schemathesis cannot generate (no serializer
    # for application/zip); its hostile bodies are tests/api/test_api_code.py's.
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if op.label != "POST /v1/code"]
    assert len(operations) >= 9, [op.label for op in operations]
    # Positive: documents that fit the schema (they reach the handlers and the database);
    # negative: ones that do not (wrong types, out-of-range numbers, missing fields).
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for operation, mode in [(op, m) for op in operations for m in modes]:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode),
               with_token=st.sampled_from([True, True, True, False]))
        def run(case: Any, with_token: bool) -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
            where = (f"{case.method} {case.formatted_path} query={case.query!r} "
                     f"body={str(case.body)[:200]!r}")
            # Failures are collected, not raised: a slow first call on a busy machine must not
            # turn into Hypothesis' "flaky" error; only server errors count.
            try:
                response = case.call(headers=headers)
            except Exception as e:  # noqa: BLE001 - the app raised through the transport
                failures.append(f"{where}: {type(e).__name__}: {e}")
                return
            seen[(case.operation.label, response.status_code)] += 1
            if response.status_code >= 500:
                failures.append(f"{where}: {response.status_code} {response.text[:300]}")
                return
            try:
                case.validate_response(response, checks=(not_a_server_error,))
            except Exception as e:  # noqa: BLE001
                failures.append(f"{where}: {type(e).__name__}: {str(e)[:300]}")

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing to get wrong
        except Exception as e:  # noqa: BLE001 - collect every operation's failure
            causes = [f"{type(c).__name__}: {c}" for c in getattr(e, "exceptions", [])]
            failures.append(f"{operation.label} ({mode}): {type(e).__name__}: {str(e)[:500]} "
                            f"{causes}")
    print(sorted(seen.items()))
    assert failures == []
    # The generated requests reached the handlers, not only the validation in front of them.
    assert seen[("POST /v1/jobs", 201)] > 0 and seen[("POST /v1/jobs", 422)] > 0, seen
    assert seen[("GET /v1/jobs", 200)] > 0 and seen[("GET /healthz", 200)] > 0, seen
    assert seen[("GET /v1/jobs/{job_id}", 422)] > 0, seen
