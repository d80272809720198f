"""The local store as a :class:`~tuner.cli._source.JobsSource`: the jobs database at
``TUNER_DB_URL`` through :mod:`tuner.store`, answering in the REST API's shapes, built by
the API's own builders (:mod:`tuner.views`: what ``GET /v1/jobs``, ``GET /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/report/facts`` answer)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuner import store
from tuner.cli._source import WrittenReport
from tuner.config import get_settings
from tuner.errors import JobStateError, TunerError
from tuner.results import JobResult
from tuner.views import ReportFacts, job_detail, job_page, report_facts, succeeded_result

__all__ = ["NO_SERVER", "LocalJobs", "local_job"]

NO_SERVER = ("no tuner server: set TUNER_URL or pass --server URL "
             "(or run the job in this process: tuner run {source})")


class LocalJobs:
    """The jobs database of this machine (``TUNER_DB_URL``), migrated when opened."""

    where = "this store"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or get_settings().database_url
        store.upgrade(self.url)

    def jobs(self, *, limit: int, state: str | None = None) -> dict[str, Any]:
        with store.session_scope(self.url) as session:
            return job_page(store.list_jobs(session, limit=limit, state=state),
                            total=store.count_jobs(session, state=state), limit=limit,
                            offset=0)

    def job(self, job_id: int) -> dict[str, Any]:
        with store.session_scope(self.url) as session:
            return job_detail(store.get_job(session, job_id), store.job_events(session, job_id))

    def latest(self) -> dict[str, Any] | None:
        with store.session_scope(self.url) as session:
            job = store.latest_job(session)
            return None if job is None else job_detail(job, store.job_events(session, job.id))

    def cancel(self, job_id: int) -> dict[str, Any]:
        with store.session_scope(self.url) as session:
            job = store.request_cancel(session, job_id)
            return job_detail(job, store.job_events(session, job_id))

    def export(self, job_id: int) -> dict[str, Any]:
        with store.session_scope(self.url) as session:
            job = store.get_job(session, job_id)
            result = succeeded_result(job, "only a succeeded job has an export")
        return dict(result.export)

    def _spec_and_result(self, job_id: int) -> tuple[dict[str, Any], JobResult]:
        with store.session_scope(self.url) as session:
            job = store.get_job(session, job_id)
            result = succeeded_result(job, "a report needs a succeeded job")
            return dict(job.spec), result

    def report_facts(self, job_id: int) -> ReportFacts:
        return report_facts(*self._spec_and_result(job_id))

    def write_report(self, job_id: int, out_dir: Path) -> WrittenReport:
        from tuner.analysis.report import write_report

        spec, result = self._spec_and_result(job_id)
        files = write_report(job_id, spec, result, out_dir, storage_url=self.url)
        pngs = [f.name for f in files if f.suffix == ".png"]
        return WrittenReport(out_dir / "report.html", f"{len(pngs)} plots: {', '.join(pngs)}")

    def upload_code(self, data: bytes, *, source: str) -> dict[str, Any]:
        raise TunerError(NO_SERVER.format(source=source))

    def submit(self, document: dict[str, Any], *, source: str) -> dict[str, Any]:
        raise TunerError(NO_SERVER.format(source=source))

    def take_over(self, job_id: int, *, force: bool = False) -> dict[str, Any]:
        """A running job whose process died, taken over by this process (``tuner resume``):
        its spec as stored.

        Raises:
            JobStateError: the job is not running, or its heartbeat is fresh (unless
                ``force``).
        """
        with store.session_scope(self.url) as session:
            job = store.get_job(session, job_id)
            if job.state != store.JobState.RUNNING:
                raise JobStateError(
                    f"job {job_id} is {job.state}; only a running job whose process died can "
                    "be resumed"
                )
            beat = job.heartbeat_at or job.started_at
            age = (datetime.now(UTC) - beat).total_seconds() if beat else float("inf")
            if age < store.STALE_AFTER_S and not force:
                raise JobStateError(
                    f"job {job_id} is still running (heartbeat {age:.0f} s ago); resume a job "
                    f"whose heartbeat is older than {store.STALE_AFTER_S:.0f} s, or pass --force"
                )
            store.take_over(session, job, message="resumed by tuner resume")
            return dict(job.spec)

    def close(self) -> None:
        pass


def local_job(job_id: int | None) -> dict[str, Any]:
    """A job of this machine's store in full (``ui`` and ``dashboard`` serve this store's
    MLflow and studies): ``job_id``'s, or the latest."""
    source = LocalJobs()
    job = source.job(job_id) if job_id is not None else source.latest()
    if job is None:
        raise TunerError("no jobs in this store yet: try tuner demo")
    return job
