"""Where the jobs live, for the commands: one :class:`JobsSource`, chosen once.

``tuner jobs``, ``status``, ``cancel``, ``export``, ``report`` and ``submit`` talk to a
:class:`JobsSource` and never ask where the jobs are. :func:`tuner.cli._app.open_source`
picks it from ``--server`` / ``TUNER_URL``: :class:`tuner.cli._local.LocalJobs` (the jobs
database at ``TUNER_DB_URL``, through :mod:`tuner.store`) or
:class:`tuner.cli._remote.RemoteJobs` (the server, through :class:`tuner.client.TunerClient`).
Both answer in the REST API's shapes (built by :mod:`tuner.views`): a job in full is
``GET /v1/jobs/{id}``'s ``JobDetail``, a page of jobs ``GET /v1/jobs``'s ``JobPage``, a
report's facts ``GET /v1/jobs/{id}/report/facts``'s ``ReportFacts``; and with the same
:class:`~tuner.errors.TunerError` lines (the API's 404 and 409 answers carry the store's
messages).

The two are imported when a source is opened (docs/architecture.md, "Imports inside
functions").

Example:
    >>> with open_source(server) as source:
    ...     job = source.job(3)
    >>> job["state"], job["leaderboard"][0]["optimizer"]
    ('succeeded', 'adam')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tuner.views import ReportFacts

__all__ = ["JobsSource", "WrittenReport"]


@dataclass(frozen=True)
class WrittenReport:
    """A report written on this machine: its ``report.html`` and a note on what is in it."""

    path: Path
    note: str


class JobsSource(Protocol):
    """The jobs the commands read and change: the local store or a tuner server.

    Every job is a dict in the REST API's shape (``JobSummary`` in lists, ``JobDetail``
    otherwise); a job that is not there raises :class:`~tuner.errors.JobNotFoundError`, an
    operation the job's state forbids :class:`~tuner.errors.JobStateError`.
    """

    #: Where the jobs are, for messages: ``"this store"`` or the server's URL.
    where: str

    def jobs(self, *, limit: int, state: str | None = None) -> dict[str, Any]:
        """A page of jobs, newest first: ``{items, total, limit, offset}``."""
        ...

    def job(self, job_id: int) -> dict[str, Any]:
        """A job in full: spec, progress, history, leaderboard once succeeded."""
        ...

    def latest(self) -> dict[str, Any] | None:
        """The newest job in full, or None when there is none."""
        ...

    def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a job (a queued one at once); the job in full afterwards."""
        ...

    def export(self, job_id: int) -> dict[str, Any]:
        """A succeeded job's export document (:mod:`tuner.analysis.export`)."""
        ...

    def report_facts(self, job_id: int) -> ReportFacts | None:
        """A succeeded job's tunability and sensitivity facts (:func:`tuner.views.report_facts`,
        ``GET /v1/jobs/{id}/report/facts``); None from a server older than that endpoint
        (its report.html has them)."""
        ...

    def write_report(self, job_id: int, out_dir: Path) -> WrittenReport:
        """Write a succeeded job's ``report.html`` (and its plots) into ``out_dir``."""
        ...

    def upload_code(self, data: bytes, *, source: str) -> dict[str, Any]:
        """Store a zip of a code folder, shipped with the job file ``source``:
        ``{sha256, size, created_at}`` (the same archive stored twice is kept once)."""
        ...

    def submit(self, document: dict[str, Any], *, source: str) -> dict[str, Any]:
        """Queue a validated job document; the job in full (with its ``id``)."""
        ...

    def close(self) -> None:
        """Let go of the connection."""
        ...
