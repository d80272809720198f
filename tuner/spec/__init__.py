"""The job file: one pydantic model shared by the CLI (YAML) and the REST API (JSON).

A bad document is refused whole, before anything is stored, with one line per bad field
naming the field, the value and what is allowed. The package in three parts:

- ``_schema``: :class:`JobSpec` and its parts, their validators, :func:`parse_job`,
  :func:`study_name`;
- ``_errors``: pydantic's ``ValidationError`` as those lines;
- ``_yaml``: an untrusted document read safely: the limits checked before validation
  (:func:`document_problems`) and the job file reader (:func:`load_job_file`).

Example::

    spec = load_job_file("job.yaml")      # or parse_job(document) for a parsed dict
"""

from __future__ import annotations

from tuner.errors import SpecError
from tuner.spec._schema import (
    CLASSIC_OPTIMIZERS,
    PRUNERS,
    SAMPLERS,
    JobSpec,
    Resources,
    TrainerOptions,
    parse_job,
    study_name,
)
from tuner.spec._yaml import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_VALUES,
    document_problems,
    load_job_file,
)

__all__ = [
    "CLASSIC_OPTIMIZERS",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_VALUES",
    "PRUNERS",
    "SAMPLERS",
    "JobSpec",
    "Resources",
    "SpecError",
    "TrainerOptions",
    "document_problems",
    "load_job_file",
    "parse_job",
    "study_name",
]
