"""Reading search-space files and applying a job's ``space_overrides``.

Every problem a user can cause is reported on one line naming the file (or the override) and the
key, what was found and what is allowed; all problems of one input are collected and joined.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from search_spaces._params import ParamSpec, apply_override, parse_param
from search_spaces._space import IMPLICIT_PARAMS, NON_KWARGS, SearchSpace
from tuner.errors import SearchSpaceError

PACKAGE_DIR = Path(__file__).resolve().parent
_TOP_KEYS = ("class", "description", "fixed", "name", "params")
_REQUIRED = ("name", "description", "class", "params")
# Keyword arguments that are not hyperparameters: never tuned, never fixed by a space.
_NOT_HYPERPARAMETERS = frozenset({"self", "params", "betas"})


def available() -> list[str]:
    """Sorted names of the search spaces shipped in the ``search_spaces`` package."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.yaml"))


def _shipped_path(name: str) -> Path:
    if name not in available():
        raise SearchSpaceError(
            f"unknown search space {name!r}; available: {', '.join(available())}"
        )
    return PACKAGE_DIR / f"{name}.yaml"


def _display(path: Path) -> str:
    """``search_spaces/adam.yaml`` for shipped files, the path as given otherwise."""
    try:
        if path.resolve().parent == PACKAGE_DIR:
            return f"search_spaces/{path.name}"
    except OSError:
        pass
    return str(path)


def load(name: str, overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """Load the shipped search space ``name``, with a job's overrides applied.

    Example:
        >>> import search_spaces
        >>> space = search_spaces.load("momentum", {"momentum": {"choices": [0.99]}})
        >>> sorted(space.distributions())
        ['batch_size', 'lr', 'lr_decay', 'weight_decay']

    Args:
        name: One of :func:`available`.
        overrides: The job file's ``space_overrides[name]``: parameter -> ``{low, high, log}``
            or ``{choices: [...]}``; a single choice fixes the value.

    Raises:
        SearchSpaceError: Unknown name, invalid file or invalid overrides (all problems, joined).
    """
    return load_file(_shipped_path(name), overrides)


def load_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """Load a search space from a YAML file (a user's own, or a shipped one).

    Raises:
        SearchSpaceError: The file is missing or invalid, or an override is (problems joined).
    """
    space, problems = _read(Path(path))
    if space is None:
        raise SearchSpaceError("; ".join(problems))
    if overrides is not None:
        space, problems = _apply_overrides(space, overrides)
        if space is None:
            raise SearchSpaceError("; ".join(problems))
    return space


def validate_overrides(name: str, overrides: Mapping[str, Any]) -> list[str]:
    """Every problem of ``space_overrides[name]``, one line each; empty when they are fine."""
    try:
        space = load(name)
    except SearchSpaceError as e:
        return [str(e)]
    return _apply_overrides(space, overrides)[1]


def _apply_overrides(space: SearchSpace, overrides: Any) -> tuple[SearchSpace | None, list[str]]:
    where = f"space_overrides.{space.name}"
    if not isinstance(overrides, Mapping):
        return None, [
            f"{where}: must be a mapping of parameter -> {{low, high, log}} or "
            f"{{choices: [...]}}, but got {overrides!r}"
        ]
    params = dict(space.params)
    problems = []
    source = _display(space.path)
    for pname, raw in overrides.items():
        if pname not in params and pname in IMPLICIT_PARAMS:
            params[pname] = IMPLICIT_PARAMS[pname]  # every space takes a schedule
        if pname not in params:
            problems.append(
                f"{where}.{pname}: unknown parameter; {space.name!r} has: "
                f"{', '.join(sorted(params))}"
            )
            continue
        new, errs = apply_override(params[pname], raw, source=source)
        problems.extend(f"{where}.{pname}: {e}" for e in errs)
        if new is not None:
            params[pname] = new
    if problems:
        return None, problems
    return (
        SearchSpace(
            space.name,
            space.description,
            space.torch_class,
            space.path,
            dict(space.fixed),
            params,
        ),
        [],
    )


def _read(path: Path) -> tuple[SearchSpace | None, list[str]]:
    where = _display(path)
    doc, problems = _load(path, where)
    if doc is None:
        return None, problems
    problems = _key_problems(where, doc)
    raw_params, fixed = _sections(where, doc, problems)
    cls = doc.get("class")
    kwargs = None
    if isinstance(cls, str) and cls.strip():
        kwargs, problem = _torch_kwargs(cls)
        if problem:
            problems.append(f"{where}: class: {problem}")
    params: dict[str, ParamSpec] = {}
    if raw_params is not None:
        params = _read_params(where, raw_params, problems)
        if kwargs is not None:
            problems.extend(_check_names(where, str(cls), kwargs, raw_params, fixed))
    if problems:
        return None, problems
    return (
        SearchSpace(
            name=doc["name"].strip(),
            description=doc["description"].strip(),
            torch_class=str(cls).strip(),
            path=path,
            fixed=dict(fixed),
            params=params,
        ),
        [],
    )


def _load(path: Path, where: str) -> tuple[Mapping[str, Any] | None, list[str]]:
    """The file's YAML document, if it can be read and is a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{where}: no such file"]
    except OSError as e:
        return None, [f"{where}: cannot read: {e.strerror or e}"]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return None, [f"{where}: invalid YAML{at}: {problem}"]
    if not isinstance(doc, Mapping):
        return None, [f"{where}: must be a mapping with keys {', '.join(_REQUIRED)}"]
    return doc, []


def _key_problems(where: str, doc: Mapping[str, Any]) -> list[str]:
    """Unknown and missing top-level keys, and the one-line strings that are not."""
    problems: list[str] = []
    unknown = sorted(str(k) for k in doc if k not in _TOP_KEYS)
    if unknown:
        problems.append(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}")
    problems.extend(f"{where}: {key}: missing" for key in _REQUIRED if key not in doc)
    for key in ("name", "description", "class"):
        v = doc.get(key)
        if key in doc and (not isinstance(v, str) or not v.strip() or "\n" in v.strip()):
            problems.append(f"{where}: {key}: must be a one-line string, but got {v!r}")
    return problems


def _sections(where: str, doc: Mapping[str, Any],
              problems: list[str]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """``params`` (None when missing or not a mapping) and ``fixed`` (empty when not given);
    what is wrong with them goes to ``problems``."""
    raw_params = doc.get("params")
    if "params" in doc and not isinstance(raw_params, Mapping):
        problems.append(f"{where}: params: must be a mapping of parameter -> distribution")
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, Mapping):
        problems.append(f"{where}: fixed: must be a mapping of torch.optim keyword -> value")
        fixed = {}
    return (raw_params if isinstance(raw_params, Mapping) else None), fixed


def _read_params(where: str, raw_params: Mapping[str, Any],
                 problems: list[str]) -> dict[str, ParamSpec]:
    """The parameters that parse; what is wrong with the others goes to ``problems``."""
    params = {}
    for required, hint in (
        ("lr", "every search space tunes the learning rate"),
        ("batch_size", "for full-batch GD give {type: categorical, choices: [full]}"),
    ):
        if required not in raw_params:
            problems.append(f"{where}: params.{required}: missing; {hint}")
    for pname, raw in raw_params.items():
        spec, errs = parse_param(str(pname), raw)
        problems.extend(f"{where}: params.{pname}: {e}" for e in errs)
        if spec is not None:
            params[str(pname)] = spec
    if ("beta1" in raw_params) != ("beta2" in raw_params):
        problems.append(
            f"{where}: params: beta1 and beta2 go together (torch's betas); give both"
        )
    return params


def _check_names(
    where: str, cls: str, kwargs: set[str], raw_params: Mapping[str, Any], fixed: Mapping
) -> list[str]:
    problems = []
    allowed = sorted(NON_KWARGS | (kwargs - _NOT_HYPERPARAMETERS) - {"lr_decay"})
    for pname in raw_params:
        if pname in ("beta1", "beta2") and "betas" not in kwargs:
            problems.append(f"{where}: params.{pname}: torch.optim.{cls} takes no betas")
        elif pname not in NON_KWARGS and pname not in kwargs:
            problems.append(
                f"{where}: params.{pname}: unknown parameter for torch.optim.{cls}; "
                f"allowed: {', '.join(allowed)}"
            )
    for key in fixed:
        if key == "lr_decay":
            problems.append(
                f"{where}: fixed.lr_decay: the name lr_decay is reserved for the learning-rate "
                "schedule (params.lr_decay)"
            )
        elif key not in kwargs or key in _NOT_HYPERPARAMETERS - {"betas"}:
            problems.append(f"{where}: fixed.{key}: not a keyword argument of torch.optim.{cls}")
        elif key in raw_params or (key == "betas" and "beta1" in raw_params):
            problems.append(f"{where}: fixed.{key}: also given under params; keep one")
    return problems


def _torch_kwargs(cls: str) -> tuple[set[str] | None, str | None]:
    """The keyword arguments of ``torch.optim.<cls>``, or why it is not an optimizer class."""
    import torch

    def is_optimizer(obj: Any) -> bool:
        return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)

    obj = getattr(torch.optim, cls, None)
    if obj is None or not is_optimizer(obj) or obj is torch.optim.Optimizer:
        names = sorted(
            n
            for n in dir(torch.optim)
            if not n.startswith("_") and is_optimizer(getattr(torch.optim, n)) and n != "Optimizer"
        )
        return None, f"unknown torch.optim class {cls!r}; available: {', '.join(names)}"
    return set(inspect.signature(obj).parameters), None
