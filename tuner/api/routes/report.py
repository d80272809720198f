"""``/v1/jobs/{id}/report``: a succeeded job's report, read-only, like the other reads.

``GET /v1/jobs/{id}/report`` answers ``report.html`` with its plots inlined (``data:`` URIs),
so one request (a browser, ``curl -o``, ``tuner report ID`` with ``TUNER_URL``) has the whole
report; ``GET /v1/jobs/{id}/report/{file}`` answers one of its files (the PNGs). The files are
those the job wrote on the server's disk (``TUNER_HOME/reports/job-<id>/``); when they are
gone, the report is drawn again from the stored result. ``GET /v1/jobs/{id}/report/facts``
answers the report's tunability and sensitivity facts as JSON (:class:`tuner.views.ReportFacts`,
what ``tuner report`` prints under the leaderboard).
"""

from __future__ import annotations

import base64
import re
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from tuner import store
from tuner.api.deps import SessionDep, SettingsDep
from tuner.api.schemas import ErrorOut, ReportFacts
from tuner.config import Settings
from tuner.errors import JobNotFoundError
from tuner.views import report_facts, succeeded_result

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No job with this id, or no such report file."},
    409: {"model": ErrorOut, "description": "The job has not succeeded."},
}
_IMAGE = re.compile(r"""src=(['"])([\w.-]+\.png)\1""")
_drawing = threading.Lock()  # one redraw at a time: two requests must not write one folder
_NEEDS = "a report needs a succeeded job"


def _report_files(settings: Settings, session: Any, job_id: int) -> dict[str, Path]:
    """``name -> path`` of a succeeded job's report files on this server's disk."""
    job = store.get_job(session, job_id)
    result = succeeded_result(job, _NEEDS)
    spec = dict(job.spec)
    files = {Path(p).name: Path(p) for p in result.report_files}
    if files and all(path.is_file() for path in files.values()):
        return files
    with _drawing:
        # Drawn again where the job writes it (tuner.engine.jobs.report_dir).
        out_dir = settings.home / "reports" / f"job-{job_id}"
        if (out_dir / "report.html").is_file():
            return {path.name: path for path in out_dir.iterdir() if path.is_file()}
        from tuner.analysis.report import write_report

        written = write_report(job_id, spec, result, out_dir, storage_url=settings.database_url)
        return {path.name: path for path in written}


@router.get(
    "/{job_id}/report",
    response_class=HTMLResponse,
    responses={**_RESPONSES, 200: {"content": {"text/html": {}},
                                   "description": "report.html, its plots inlined."}},
)
def get_report(job_id: int, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """A succeeded job's report: leaderboard, statistics, plots (inlined) and the protocol."""
    files = _report_files(settings, session, job_id)
    html = files["report.html"].read_text(encoding="utf-8")

    def inline(match: re.Match[str]) -> str:
        path = files.get(match.group(2))
        if path is None:
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"src={match.group(1)}data:image/png;base64,{data}{match.group(1)}"

    return HTMLResponse(_IMAGE.sub(inline, html))


@router.get("/{job_id}/report/facts", response_model=ReportFacts, responses=_RESPONSES)
def get_report_facts(job_id: int, session: SessionDep) -> ReportFacts:
    """A succeeded job's tunability and sensitivity facts, per optimizer, and the report's
    warnings: what ``tuner report`` prints under the leaderboard (the expected best-so-far
    curve is drawn in ``tunability.png``, not sent)."""
    job = store.get_job(session, job_id)
    result = succeeded_result(job, _NEEDS)
    return report_facts(dict(job.spec), result)


@router.get(
    "/{job_id}/report/{name}",
    response_class=FileResponse,
    responses={**_RESPONSES, 200: {"content": {"image/png": {}, "text/html": {}},
                                   "description": "One file of the report."}},
)
def get_report_file(job_id: int, name: str, session: SessionDep,
                    settings: SettingsDep) -> FileResponse:
    """One file of a succeeded job's report (``convergence.png``, ``report.html``, ...)."""
    files = _report_files(settings, session, job_id)
    path = files.get(name)
    if path is None:
        raise JobNotFoundError(
            f"job {job_id}'s report has no file {name!r}; it has {', '.join(sorted(files))}")
    media = "text/html" if path.suffix == ".html" else "image/png"
    return FileResponse(path, media_type=media)
