"""The job file: one pydantic model shared by the CLI (YAML) and the REST API (JSON).

Every validation message lives here. A bad document is refused whole, before anything is
stored, with one line per bad field naming the field, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from tuner.errors import SpecError

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_VALUES",
    "PRUNERS",
    "SAMPLERS",
    "JobSpec",
    "Resources",
    "TrainerOptions",
    "document_problems",
    "load_job_file",
    "parse_job",
    "study_name",
]

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("none", "median", "sha", "hyperband")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Limits of a job document, checked before validation: a real one is a few hundred bytes,
#: five levels deep, a few dozen values. They keep hostile documents (a body nested
#: thousands deep, a YAML alias bomb) from costing the process its stack or its memory.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 100_000
#: YAML aliases (``*name``) a job file may use; a bomb nests aliases of aliases.
MAX_ALIASES = 100

#: The seven classic optimizers of the demo, in the order people learn them.
CLASSIC_OPTIMIZERS = ("gd", "sgd", "minibatch", "momentum", "nag", "rmsprop", "adam")


def study_name(job_id: int, optimizer: str) -> str:
    """The Optuna study of one optimizer of a job: ``job-<id>-<optimizer>``."""
    return f"job-{job_id}-{optimizer}"


class _Problems(ValueError):
    """Complete messages (each naming its field) from a validator, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    # loader and the task registry are the authority on what exists; they are imported
    # here, at validation time, so that `import tuner` stays light.

    @field_validator("optimizers")
    @classmethod
    def _known_optimizers(cls, optimizers: list[str]) -> list[str]:
        import search_spaces

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
            raise _Problems(problems)
        return optimizers

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        from tuner.errors import TaskError
        from tuner.task import task_target

        try:
            task_target(task)
        except TaskError as e:
            raise _Problems([f"task: {e}"]) from None
        return task

    @field_validator("metric")
    @classmethod
    def _reported_metric(cls, metric: str, info: ValidationInfo) -> str:
        from tuner.task import is_module_path, task_reports

        task = info.data.get("task")
        reported = task_reports(task) if task else None
        if reported is not None:  # a built-in task says what it reports
            if metric not in reported:
                raise _Problems([
                    f"metric: task {task!r} does not report {metric!r}; allowed: "
                    f"{', '.join(reported)}"
                ])
        elif task and is_module_path(task):
            # A user's Task or training loop: known once it runs (the workers check it).
            pass
        elif metric not in ("val_loss", "train_loss") and not metric.startswith("val_"):
            raise _Problems([
                f"metric: {metric!r} is not reported; allowed: val_loss, train_loss "
                "or val_<metric> of the task (see tuner tasks)"
            ])
        return metric

    @field_validator("lr_range_test")
    @classmethod
    def _range_test_needs_a_task(cls, lr_range_test: bool, info: ValidationInfo) -> bool:
        from tuner.task import LOOP_TASKS

        task = info.data.get("task")
        if lr_range_test and task in LOOP_TASKS:
            raise _Problems([
                f"lr_range_test: task {task!r} is a training loop; the range test trains a "
                "Task (a model, data and a loss) and cannot drive a loop"
            ])
        return lr_range_test

    @field_validator("trainer")
    @classmethod
    def _amp_device(cls, trainer: TrainerOptions, info: ValidationInfo) -> TrainerOptions:
        resources = info.data.get("resources")
        if trainer.amp == "fp16" and resources is not None and resources.gpus_per_trial == 0:
            raise _Problems([
                "trainer.amp: fp16 needs a GPU (resources.gpus_per_trial > 0); on CPU use "
                "bf16 or off"
            ])
        return trainer

    @field_validator("space_overrides")
    @classmethod
    def _valid_overrides(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        import search_spaces

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
            raise _Problems(problems)
        return overrides

    @field_validator("code")
    @classmethod
    def _code_hash(cls, code: str | None) -> str | None:
        if code is not None and not _SHA256.match(code):
            raise _Problems([
                f"code: got {code!r}; allowed: the SHA-256 (64 lowercase hex digits) of a code "
                "archive uploaded with POST /v1/code (tuner submit --code DIR sends it)"
            ])
        return code

    @field_validator("requirements")
    @classmethod
    def _valid_requirements(cls, requirements: list[str] | None) -> list[str] | None:
        from packaging.requirements import InvalidRequirement, Requirement

        if requirements is None:
            return None
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
            raise _Problems(problems)
        return requirements

    def study_name(self, job_id: int, optimizer: str) -> str:
        """The Optuna study of one optimizer of a job: ``job-<id>-<optimizer>``."""
        return study_name(job_id, optimizer)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.mode == "min" else "maximize"


def _format_errors(error: ValidationError) -> list[str]:
    problems: list[str] = []
    for item in error.errors():
        loc = ""
        for part in item["loc"]:  # optimizers[1], space_overrides.adam.lr: as a user reads it
            loc += f"[{part}]" if isinstance(part, int) else f".{part}" if loc else str(part)
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, _Problems):
            problems.extend(cause.problems)  # complete messages that name their field
            continue
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            model = (Resources if loc.startswith("resources.") else
                     TrainerOptions if loc.startswith("trainer.") else JobSpec)
            allowed = ", ".join(model.model_fields)
            message = f"unknown field; allowed: {allowed}"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "literal_error":
            message = f"got {item.get('input')!r}; {item['msg'][0].lower()}{item['msg'][1:]}"
        elif "input" in item and not isinstance(item["input"], dict | list):
            message = f"got {item['input']!r}; {item['msg'][0].lower()}{item['msg'][1:]}"
        problems.append(f"{loc}: {message}")
    return problems


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
        raise SpecError(_format_errors(e), source=source) from None


def _where(path: tuple[str | int, ...]) -> str:
    """``("optimizers", 1)`` -> ``optimizers[1]``, as :func:`_format_errors` names fields."""
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where or "job"


def document_problems(document: Any, *, max_depth: int = MAX_DEPTH,
                      max_values: int = MAX_VALUES) -> list[str]:
    """What makes a parsed document unfit to validate or store, before :func:`parse_job`.

    Text with a NUL character (PostgreSQL cannot store it), nesting deeper than
    ``max_depth`` and more than ``max_values`` values. Walks without recursion and stops
    at the budget, so a document built to explode (shared references from YAML aliases)
    costs at most ``max_values`` steps.

    Example:
        >>> document_problems({"name": "a\x00b"})
        ['name: contains a NUL character (\\x00); text fields cannot hold it']
    """
    problems: list[str] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    seen = 0
    while stack:
        value, path = stack.pop()
        seen += 1
        if seen > max_values:
            problems.append(f"the document has more than {max_values} values; a job has a "
                            "few dozen")
            break
        if len(path) > max_depth:
            problems.append(f"{_where(path[:3])}: nested deeper than {max_depth} levels; a job "
                            "is a few levels deep")
            break
        if isinstance(value, str) and "\x00" in value:
            problems.append(f"{_where(path)}: contains a NUL character (\\x00); text fields "
                            "cannot hold it")
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if isinstance(key, str) and "\x00" in key:
                    problems.append(f"{_where(path)}: the key {key!r} contains a NUL "
                                    "character (\\x00); text fields cannot hold it")
                    continue
                stack.append((item, (*path, str(key))))
        elif isinstance(value, list | tuple):
            stack.extend((item, (*path, i)) for i, item in reversed(list(enumerate(value))))
    return problems


class _JobFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a cap on aliases: a "billion laughs" file (aliases of
    aliases) is refused while it is read, before anything walks the expanded tree."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None,
                    f"more than {MAX_ALIASES} aliases (*name); a job file needs few or none",
                    event.start_mark,
                )
        return super().compose_node(parent, index)


def load_job_file(path: str | Path) -> JobSpec:
    """Read and validate a YAML (or JSON) job file.

    Raises:
        SpecError: the file is missing, is not UTF-8 text or not YAML, is too large or
            too deep, or has bad fields.
    """
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as e:
        raise SpecError([f"cannot read the job file: {e.strerror}"], source=source) from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SpecError([f"the job file is larger than {MAX_DOCUMENT_BYTES} bytes; a job file "
                         "is a few hundred"], source=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError([f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}; "
                         "a job file is YAML in UTF-8"], source=source) from None
    if "\x00" in text:
        offset = text.index("\x00")
        raise SpecError([f"not a text file: a NUL byte at offset {offset}; a job file is YAML "
                         "in UTF-8"], source=source)
    try:
        document = yaml.load(text, Loader=_JobFileLoader)  # a SafeLoader
    except RecursionError:
        raise SpecError([f"nested deeper than {MAX_DEPTH} levels; a job is a few levels "
                         "deep"], source=source) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError([f"not valid YAML{where}: {problem}"], source=source) from None
    problems = document_problems(document)
    if problems:
        raise SpecError(problems, source=source)
    return parse_job(document, source=source)
