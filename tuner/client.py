"""The HTTP client of the tuner server, used by the CLI when ``TUNER_URL`` (or ``--server``)
is set. Every failure is a :class:`~tuner.errors.TunerError` with one line to print.

Example:
    >>> client = TunerClient("http://127.0.0.1:8000", token=os.environ["TUNER_API_TOKEN"])
    >>> job = client.submit({"task": "digits-mlp", "optimizers": ["sgd", "adam"]})
    >>> client.job(job["id"])["state"]
    'queued'
"""

from __future__ import annotations

from typing import Any, cast

import httpx

from tuner.errors import CodeError, JobNotFoundError, JobStateError, SpecError, TunerError

__all__ = ["TunerClient"]


class TunerClient:
    """Talks to ``tuner serve`` at ``url``; sends ``token`` as a bearer token when given."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise TunerError(
                f"TUNER_URL: got {url!r}; expected the server's address, "
                "e.g. http://127.0.0.1:8000"
            )
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TunerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the endpoints ---------------------------------------------------------------------

    def submit(self, document: dict[str, Any], *, source: str = "job") -> dict[str, Any]:
        """``POST /v1/jobs``: the stored job (with its ``id``)."""
        return self._json("POST", "/v1/jobs", json=document, source=source)

    def upload_code(self, data: bytes) -> dict[str, Any]:
        """``POST /v1/code``: store a zip of a code folder; ``{sha256, size, created_at}``
        (the same archive stored twice is kept once)."""
        return self._json(
            "POST", "/v1/code", content=data, headers={"Content-Type": "application/zip"},
            timeout=httpx.Timeout(30.0, write=600.0), source="--code",
        )

    def jobs(self, *, limit: int = 50, offset: int = 0,
             state: str | None = None) -> dict[str, Any]:
        """``GET /v1/jobs``: ``{items, total, limit, offset}``, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._json("GET", "/v1/jobs", params=params, source="--state")

    def job(self, job_id: int) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``."""
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: int) -> dict[str, Any]:
        """``POST /v1/jobs/{id}/cancel``."""
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def trials(self, job_id: int, *, optimizer: str | None = None, limit: int = 1000,
               offset: int = 0) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/trials``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if optimizer:
            params["optimizer"] = optimizer
        return self._json("GET", f"/v1/jobs/{job_id}/trials", params=params)

    def export(self, job_id: int) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/export?format=json``: the export document."""
        return self._json("GET", f"/v1/jobs/{job_id}/export", params={"format": "json"})

    def report(self, job_id: int) -> str:
        """``GET /v1/jobs/{id}/report``: report.html with its plots inlined."""
        return self._request("GET", f"/v1/jobs/{job_id}/report").text

    def report_facts(self, job_id: int) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/report/facts``: the report's tunability and sensitivity facts."""
        return self._json("GET", f"/v1/jobs/{job_id}/report/facts")

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return self._json("GET", "/healthz")

    # -- transport -------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object the endpoint answers (each of them answers one)."""
        return cast("dict[str, Any]", self._request(method, path, **kwargs).json())

    def _request(self, method: str, path: str, *, source: str = "request",
                 **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            reason = _reason(e)
            raise TunerError(
                f"cannot reach the tuner server at {self.url}: {reason}; "
                "is `tuner serve` running?"
            ) from None
        except httpx.TimeoutException:
            raise TunerError(f"the tuner server at {self.url} did not answer in time") from None
        except httpx.HTTPError as e:
            raise TunerError(f"tuner server at {self.url}: {e}") from None
        if response.is_success:
            return response
        detail = _detail(response)
        code = response.status_code
        if code == 401:
            raise TunerError(f"the tuner server at {self.url} refused the request: {detail}; "
                             "set TUNER_API_TOKEN to the server's token")
        if code == 404:
            raise JobNotFoundError(str(detail))
        if code == 409:
            raise JobStateError(str(detail))
        if code == 422 and isinstance(detail, list):
            raise SpecError([_problem(item) for item in detail], source=source)
        if path.startswith("/v1/code") and code in (413, 415, 422):
            raise CodeError(f"the tuner server at {self.url} refused it: {detail}",
                            too_large=code == 413)
        raise TunerError(f"tuner server at {self.url}: HTTP {code}: {detail}")


def _reason(error: httpx.ConnectError) -> str:
    text = str(error).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return str(error) or "cannot connect"


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def _problem(item: Any) -> str:
    """A 422 item as one line: our ``msg`` names its field; FastAPI's own gets its ``loc``."""
    if not isinstance(item, dict):
        return str(item)
    msg = str(item.get("msg", item))
    loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query")]
    if loc and not msg.startswith(loc[0]):
        return f"{'.'.join(loc)}: {msg}"
    return msg
