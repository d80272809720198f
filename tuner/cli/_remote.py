"""A tuner server as a :class:`~tuner.cli._source.JobsSource`: its REST API through
:class:`tuner.client.TunerClient`, with the token of ``TUNER_API_TOKEN``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.cli._source import WrittenReport
from tuner.client import TunerClient
from tuner.config import get_settings
from tuner.errors import JobNotFoundError
from tuner.views import ReportFacts

__all__ = ["RemoteJobs"]


class RemoteJobs:
    """The jobs of a tuner server, through its REST API."""

    def __init__(self, url: str, *, client: TunerClient | None = None) -> None:
        if client is None:
            client = TunerClient(url, token=get_settings().api_token)
        self.client = client
        self.where = client.url

    def jobs(self, *, limit: int, state: str | None = None) -> dict[str, Any]:
        return self.client.jobs(limit=limit, state=state)

    def job(self, job_id: int) -> dict[str, Any]:
        return self.client.job(job_id)

    def latest(self) -> dict[str, Any] | None:
        items = self.client.jobs(limit=1)["items"]
        return self.client.job(items[0]["id"]) if items else None

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self.client.cancel(job_id)

    def export(self, job_id: int) -> dict[str, Any]:
        return self.client.export(job_id)

    def report_facts(self, job_id: int) -> ReportFacts | None:
        try:
            facts = self.client.report_facts(job_id)
        except JobNotFoundError:
            # A server older than GET /v1/jobs/{id}/report/facts (the job itself was found):
            # its report.html has them.
            return None
        return ReportFacts.model_validate(facts)

    def write_report(self, job_id: int, out_dir: Path) -> WrittenReport:
        html = self.client.report(job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.html"
        path.write_text(html, encoding="utf-8")
        plots = html.count("data:image/png;base64,")
        return WrittenReport(
            path, f"{plots} plots inlined; from {self.client.url}/v1/jobs/{job_id}/report")

    def upload_code(self, data: bytes, *, source: str) -> dict[str, Any]:
        return self.client.upload_code(data)

    def submit(self, document: dict[str, Any], *, source: str) -> dict[str, Any]:
        return self.client.submit(document, source=source)

    def close(self) -> None:
        self.client.close()
