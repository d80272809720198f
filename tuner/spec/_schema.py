"""The schema of a job: one pydantic model shared by the CLI (YAML) and the REST API (JSON).

Every validation message lives here (the validators) or in :mod:`tuner.spec._errors` (the
wording of pydantic's own). A bad document is refused whole, before anything is stored, with
one line per bad field naming the field, the value and what is allowed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

import search_spaces
from tuner.errors import SpecError, TaskError
from tuner.spec._errors import Problems, format_errors
from tuner.task import LOOP_TASKS, is_module_path, task_reports, task_target

__all__ = [
    "CLASSIC_OPTIMIZERS",
    "PRUNERS",
    "SAMPLERS",
    "JobSpec",
    "Resources",
    "TrainerOptions",
    "parse_job",
    "study_name",
]

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("none", "median", "sha", "hyperband")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: The seven classic optimizers of the demo, in the order people learn them.
CLASSIC_OPTIMIZERS = ("gd", "sgd", "minibatch", "momentum", "nag", "rmsprop", "adam")


def study_name(job_id: int, optimizer: str) -> str:
    """The Optuna study of one optimizer of a job: ``job-<id>-<optimizer>``."""
    return f"job-{job_id}-{optimizer}"


class Resources(BaseModel):
    """What one trial reserves on a Ray node."""

    model_config = ConfigDict(extra="forbid")

    cpus_per_trial: float = Field(default=1, gt=0, le=256)
    gpus_per_trial: float = Field(default=0, ge=0, le=16)


class TrainerOptions(BaseModel):
    """How the built-in trainer runs a ``Task`` (a training loop ignores them).

    The defaults keep small tasks as fast as before: a validation set of up to 1024 rows is
    one batch, tensor data is batched by indexing (no DataLoader), full precision, no clipping.
    """

    model_config = ConfigDict(extra="forbid")

    # Validation in batches of this many rows; each metric is the mean over the batches,
    # weighted by their sizes (exact for accuracy, MSE and the loss).
    val_batch_size: int = Field(default=1024, ge=1, le=10_000_000, strict=True)
    # DataLoader worker processes for datasets that are not a TensorDataset (0: in-process).
    num_workers: int = Field(default=0, ge=0, le=64, strict=True)
    # Pinned host memory for those DataLoaders; null: on when the trial trains on a GPU.
    pin_memory: bool | None = None
    # Automatic mixed precision: bf16 (CPU or GPU) or fp16 (GPU only, with a GradScaler).
    amp: Literal["off", "bf16", "fp16"] = "off"
    # Clip the global gradient norm to this value before each step (null: no clipping).
    grad_clip: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, amp: Any) -> Any:
        return "off" if amp is False else amp  # YAML 1.1 reads a bare `off` as false


class JobSpec(BaseModel):
    """A tuning job: which optimizers to compare on which task, and how hard to search.

    Example::

        spec = JobSpec(task="digits-mlp", optimizers=["sgd", "adam"], trials=20, epochs=10)
    """

    model_config = ConfigDict(extra="forbid", str_max_length=300)

    name: str = Field(default="job", min_length=1, max_length=200)
    task: str = Field(min_length=1, max_length=300)
    optimizers: list[str] = Field(min_length=1, max_length=64)
    # strict: `trials: true` is not one trial
    trials: int = Field(default=20, ge=1, le=100_000, strict=True)
    epochs: int = Field(default=20, ge=1, le=100_000, strict=True)
    # validate_default: a training loop (cartpole-reinforce) need not report val_loss
    metric: str = Field(default="val_loss", min_length=1, max_length=100, validate_default=True)
    mode: Literal["min", "max"] = "min"
    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc"] = "tpe"
    pruner: Literal["none", "median", "sha", "hyperband"] = "none"
    diverged_as: Literal["worst", "fail"] = Field(
        default="worst",
        description="What the sampler is told of a diverged trial: the study's worst value "
                    "(it learns the region diverges) or a FAIL (invisible to it; an ablation).",
    )
    lr_range_test: bool = Field(
        default=False,
        description="Before the search, run a learning-rate range test (Smith 2017) per "
                    "optimizer and lower each `lr` range's upper end to where the loss blew up.",
    )
    reproducible: bool = Field(
        default=False,
        description="Same seed, task and max_concurrent give the same trials: trial n is "
                    "asked only after every earlier trial of its study was told.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, strict=True)
    final_seeds: int = Field(default=3, ge=0, le=1000, strict=True)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(default=2, ge=1, le=10_000, strict=True)
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    target: float | None = Field(
        allow_inf_nan=False,
        default=None, description="A value of `metric` whose first epoch is reported."
    )
    space_overrides: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    code: str | None = Field(
        default=None,
        description="SHA-256 of the code archive shipped with the job (POST /v1/code; "
        "`tuner submit --code DIR` sets it). The workers run in it.",
    )
    requirements: list[str] | None = Field(
        default=None, max_length=200,
        description="pip requirements installed for the job's workers (Ray runtime_env pip).",
    )
    trainer: TrainerOptions = Field(default_factory=TrainerOptions)

    # Each check is a field validator, so that every bad field is reported at once
    # (pydantic skips a model validator when a field already failed). The search-space
    # loader and the task registry are the authority on what exists.

    @field_validator("optimizers")
    @classmethod
    def _known_optimizers(cls, optimizers: list[str]) -> list[str]:
        known = search_spaces.available()
        problems, seen = [], set()
        for i, name in enumerate(optimizers):
            if name not in known:
                problems.append(
                    f"optimizers[{i}]: unknown optimizer {name!r}; available: "
                    f"{', '.join(known)} (see tuner spaces)"
                )
            elif name in seen:
                problems.append(f"optimizers[{i}]: {name!r} is listed twice")
            seen.add(name)
        if problems:
            raise Problems(problems)
        return optimizers

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        try:
            task_target(task)
        except TaskError as e:
            raise Problems([f"task: {e}"]) from None
        return task

    @field_validator("metric")
    @classmethod
    def _reported_metric(cls, metric: str, info: ValidationInfo) -> str:
        task = info.data.get("task")
        reported = task_reports(task) if task else None
        if reported is not None:  # a built-in task says what it reports
            if metric not in reported:
                raise Problems([
                    f"metric: task {task!r} does not report {metric!r}; allowed: "
                    f"{', '.join(reported)}"
                ])
        elif task and is_module_path(task):
            # A user's Task or training loop: known once it runs (the workers check it).
            pass
        elif metric not in ("val_loss", "train_loss") and not metric.startswith("val_"):
            raise Problems([
                f"metric: {metric!r} is not reported; allowed: val_loss, train_loss "
                "or val_<metric> of the task (see tuner tasks)"
            ])
        return metric

    @field_validator("lr_range_test")
    @classmethod
    def _range_test_needs_a_task(cls, lr_range_test: bool, info: ValidationInfo) -> bool:
        task = info.data.get("task")
        if lr_range_test and task in LOOP_TASKS:
            raise Problems([
                f"lr_range_test: task {task!r} is a training loop; the range test trains a "
                "Task (a model, data and a loss) and cannot drive a loop"
            ])
        return lr_range_test

    @field_validator("trainer")
    @classmethod
    def _amp_device(cls, trainer: TrainerOptions, info: ValidationInfo) -> TrainerOptions:
        resources = info.data.get("resources")
        if trainer.amp == "fp16" and resources is not None and resources.gpus_per_trial == 0:
            raise Problems([
                "trainer.amp: fp16 needs a GPU (resources.gpus_per_trial > 0); on CPU use "
                "bf16 or off"
            ])
        return trainer

    @field_validator("space_overrides")
    @classmethod
    def _valid_overrides(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # The job's list as written: even when one of its names is bad, an override of an
        # optimizer the job does not have is a problem of its own.
        optimizers = info.data.get("optimizers") or (info.context or {}).get("optimizers")
        problems: list[str] = []
        for name, override in overrides.items():
            if optimizers is not None and name not in optimizers:
                problems.append(
                    f"space_overrides.{name}: {name!r} is not one of this job's optimizers "
                    f"({', '.join(optimizers)})"
                )
                continue
            problems.extend(search_spaces.validate_overrides(name, override))
        if problems:
            raise Problems(problems)
        return overrides

    @field_validator("code")
    @classmethod
    def _code_hash(cls, code: str | None) -> str | None:
        if code is not None and not _SHA256.match(code):
            raise Problems([
                f"code: got {code!r}; allowed: the SHA-256 (64 lowercase hex digits) of a code "
                "archive uploaded with POST /v1/code (tuner submit --code DIR sends it)"
            ])
        return code

    @field_validator("requirements")
    @classmethod
    def _valid_requirements(cls, requirements: list[str] | None) -> list[str] | None:
        if requirements is None:
            return None
        from packaging.requirements import InvalidRequirement, Requirement

        problems = []
        for i, line in enumerate(requirements):
            try:
                Requirement(line)
            except InvalidRequirement as e:
                reason = str(e).splitlines()[0]
                problems.append(
                    f"requirements[{i}]: {line!r} is not a pip requirement ({reason}); "
                    "allowed: a PEP 508 requirement such as 'termcolor>=2' or 'pkg==1.0'"
                )
        if problems:
            raise Problems(problems)
        return requirements

    def study_name(self, job_id: int, optimizer: str) -> str:
        """The Optuna study of one optimizer of a job: ``job-<id>-<optimizer>``."""
        return study_name(job_id, optimizer)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.mode == "min" else "maximize"


def parse_job(document: Any, *, source: str = "job") -> JobSpec:
    """Validate a job document (a dict from YAML or JSON).

    Raises:
        SpecError: listing every bad field at once.
    """
    if document is None:
        raise SpecError(["the job is empty; it needs at least task and optimizers"],
                        source=source)
    if not isinstance(document, dict):
        raise SpecError(
            [
                "a job is a mapping of fields (name, task, optimizers, ...), "
                f"got {type(document).__name__}"
            ],
            source=source,
        )
    try:
        raw = document.get("optimizers")
        context = {"optimizers": [str(o) for o in raw]} if isinstance(raw, list) else None
        return JobSpec.model_validate(document, context=context)
    except ValidationError as e:
        raise SpecError(format_errors(e, JobSpec), source=source) from None
