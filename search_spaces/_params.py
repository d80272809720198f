"""One tunable parameter: its distribution, how a file declares it, how an override changes it.

A parameter is declared in a search-space file as one of::

    {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
    {type: float, low: 1.0e-3, high: 0.5, one_minus: true}   # q = 1 - value, q log-uniform
    {type: int, low: 1, high: 8, log: false}
    {type: categorical, choices: [32, 64, 128]}

``one_minus`` follows AlgoPerf, which tunes ``one_minus_beta1`` on a log scale: decay rates close
to 1 (0.9, 0.99, 0.999) are evenly spread in log(1 - value). In the file, ``low``/``high`` of a
``one_minus`` parameter are the range of q; in an override the user writes the range of the value
itself and it is converted here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

FULL = "full"
"""The ``batch_size`` choice meaning "the whole training set" (full-batch gradient descent)."""

Kind = Literal["float", "int", "categorical"]
KINDS: tuple[Kind, ...] = ("categorical", "float", "int")
_KEYS: dict[str, tuple[str, ...]] = {
    "float": ("high", "log", "low", "one_minus", "type"),
    "int": ("high", "log", "low", "type"),
    "categorical": ("choices", "type"),
}
OVERRIDE_KEYS = ("choices", "high", "log", "low")
SCHEDULES = ("exponential", "warmup_cosine", "constant")  # see search_spaces._space


@dataclass(frozen=True)
class ParamSpec:
    """The distribution of one parameter of a search space.

    Attributes:
        name: The shared parameter name (``lr``, ``batch_size``, ``beta1``, ``momentum``, ...).
        kind: ``"float"``, ``"int"`` or ``"categorical"``.
        low: Lower bound (float/int); in q-space for ``one_minus`` parameters.
        high: Upper bound (float/int); in q-space for ``one_minus`` parameters.
        log: Sample log-uniformly. Always true for ``one_minus`` parameters.
        one_minus: Sample q = 1 - value; the Optuna parameter is ``one_minus_<name>``.
        choices: The choices of a categorical parameter.
    """

    name: str
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    one_minus: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def optuna_name(self) -> str:
        """The Optuna parameter name: ``one_minus_<name>`` for ``one_minus`` parameters."""
        return f"one_minus_{self.name}" if self.one_minus else self.name

    @property
    def bounds(self) -> tuple[float | int, float | int]:
        """``(low, high)`` of a number parameter."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.name}: a {self.kind} parameter has no low/high")
        return self.low, self.high

    @property
    def is_constant(self) -> bool:
        """True when the parameter has a single choice: it is a constant, not sampled."""
        return self.kind == "categorical" and self.choices is not None and len(self.choices) == 1

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution of :attr:`optuna_name`."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "float":
            low, high = self.bounds
            return FloatDistribution(float(low), float(high), log=self.log)
        if self.kind == "int":
            low, high = self.bounds
            return IntDistribution(int(low), int(high), log=self.log)
        return CategoricalDistribution(list(self.choices or ()))

    def value(self, raw: Any) -> Any:
        """The user-facing value of a sampled Optuna value (``1 - q`` for ``one_minus``)."""
        if self.kind == "float":
            q = float(raw)
            return _round(1.0 - q) if self.one_minus else q
        if self.kind == "int":
            return int(raw)
        return raw

    def describe(self) -> str:
        """A short human form: ``LU[1e-05, 0.1]``, ``1 - LU[0.001, 0.5]``, ``{32, 64, 128}``."""
        if self.kind == "categorical":
            return "{" + ", ".join(str(c) for c in self.choices or ()) + "}"
        rng = f"[{self.low:g}, {self.high:g}]"
        prefix = "LU" if self.log else ("U" if self.kind == "float" else "int U")
        return f"1 - {prefix}{rng}" if self.one_minus else f"{prefix}{rng}"

    def to_dict(self) -> dict[str, Any]:
        """The file form of this parameter (YAML/JSON friendly), e.g. to store with results."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices or ())}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        out["log"] = self.log
        if self.one_minus:
            out["one_minus"] = True
        return out


def _round(x: float) -> float:
    # 1 - 0.99 is 0.010000000000000009 in binary floating point; 12 significant digits keep
    # the values users wrote (and log to MLflow) readable without losing anything that matters.
    return float(f"{x:.12g}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_problem(key: str, v: Any, *, integer: bool) -> str | None:
    if integer:
        return None if _is_int(v) else f"{key} must be an integer, but got {v!r}"
    if _is_number(v):
        return None
    hint = ""
    if isinstance(v, str):
        try:
            float(v)
            hint = f" (YAML reads {v} as a string; write it with a dot, e.g. 1.0e-5)"
        except ValueError:
            pass
    return f"{key} must be a number, but got {v!r}{hint}"


def _is_lr(v: Any) -> bool:
    return _is_number(v) and v > 0


def _is_fraction(v: Any) -> bool:
    return _is_number(v) and 0 <= v < 1


def _is_batch_size(v: Any) -> bool:
    return v == FULL or (_is_int(v) and v >= 1)


def _is_plain(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


# The values a shared parameter takes: (test, what the error says before ", but got <v>").
_VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (_is_batch_size, f"batch_size must be a positive integer or '{FULL}'"),
    "lr": (_is_lr, "lr must be > 0"),
    "lr_decay": (_is_fraction, "lr_decay must lie in [0, 1) (gamma = 1 - lr_decay)"),
    "schedule": (SCHEDULES.__contains__, f"schedule must be one of {', '.join(SCHEDULES)}"),
    "warmup": (_is_fraction, "warmup is a fraction of the steps in [0, 1)"),
}
_ANY_CHOICE = (_is_plain, "a choice must be a number, string, bool or null")


def value_problem(name: str, v: Any) -> str | None:
    """What is wrong with ``v`` as a value of the shared parameter ``name``, or None."""
    ok, rule = _VALUE_RULES.get(name, _ANY_CHOICE)
    return None if ok(v) else f"{rule}, but got {v!r}"


def _range_problems(spec: ParamSpec) -> list[str]:
    low, high = spec.bounds
    if low > high:
        return [f"`low <= high` must hold, but got low={low!r}, high={high!r}"]
    if spec.log and low <= 0:
        return [f"a log range must be > 0, but got low={low!r}"]
    if spec.one_minus and high > 1:
        return [f"one_minus: q = 1 - {spec.name} must lie in (0, 1], but got high={high!r}"]
    if not spec.one_minus:
        for key, v in (("low", low), ("high", high)):
            p = value_problem(spec.name, v)
            if p:
                return [f"{key}: {p}"]
    return []


def parse_param(name: str, raw: Any) -> tuple[ParamSpec | None, list[str]]:
    """Parse one file entry ``params.<name>``; problems are relative to that key."""
    kind, problems = _kind_of(name, raw)
    if kind is None:
        return None, problems
    if kind == "categorical":
        return _parse_choices(name, raw.get("choices"))
    return _parse_range(name, kind, raw)


def _kind_of(name: str, raw: Any) -> tuple[Kind | None, list[str]]:
    """The ``type`` of a file entry, once its keys fit that type and the parameter ``name``."""
    if not isinstance(raw, Mapping):
        return None, [
            "must be a mapping like {type: float, low: 1.0e-5, high: 1.0e-1, log: true}, "
            f"but got {raw!r}"
        ]
    kind = raw.get("type")
    if kind is None:
        return None, [f"type: missing; allowed: {', '.join(KINDS)}"]
    if kind not in KINDS:
        return None, [f"type: unknown type {kind!r}; allowed: {', '.join(KINDS)}"]
    unknown = sorted(str(k) for k in raw if k not in _KEYS[kind])
    if unknown:
        return None, [f"unknown key {unknown[0]!r}; allowed: {', '.join(_KEYS[kind])}"]
    problem = _kind_problem(name, kind)
    return (None, [problem]) if problem else (kind, [])


def _kind_problem(name: str, kind: Kind) -> str | None:
    """Why the shared parameter ``name`` cannot be of type ``kind``, or None."""
    if name == "batch_size" and kind == "float":
        return "batch_size must be int or categorical (of integers and 'full')"
    if name == "schedule" and kind != "categorical":
        return f"schedule must be categorical (of {', '.join(SCHEDULES)})"
    return None


def _parse_choices(name: str, choices: Any) -> tuple[ParamSpec | None, list[str]]:
    if not isinstance(choices, list) or not choices:
        return None, [f"choices must be a non-empty list, but got {choices!r}"]
    problems = [p for c in choices if (p := value_problem(name, c))]
    if problems:
        return None, [f"choices: {problems[0]}"]
    return ParamSpec(name, "categorical", choices=tuple(choices)), []


def _parse_range(name: str, kind: Kind,
                 raw: Mapping[str, Any]) -> tuple[ParamSpec | None, list[str]]:
    problems = []
    for key in ("low", "high"):
        if key not in raw:
            problems.append(f"{key}: missing")
        elif p := _number_problem(key, raw[key], integer=kind == "int"):
            problems.append(p)
    for key in ("log", "one_minus"):
        if key in raw and not isinstance(raw[key], bool):
            problems.append(f"{key} must be true or false, but got {raw[key]!r}")
    if problems:
        return None, problems
    one_minus = bool(raw.get("one_minus", False))
    if one_minus and raw.get("log") is False:
        return None, ["one_minus samples q = 1 - value log-uniformly; drop `log: false`"]
    low, high = raw["low"], raw["high"]
    if kind == "float":
        low, high = float(low), float(high)
    spec = ParamSpec(
        name,
        kind,
        low=low,
        high=high,
        log=one_minus or bool(raw.get("log", False)),
        one_minus=one_minus,
    )
    problems = _range_problems(spec)
    return (None, problems) if problems else (spec, [])


def apply_override(
    spec: ParamSpec, raw: Any, *, source: str
) -> tuple[ParamSpec | None, list[str]]:
    """Apply a job file's ``space_overrides.<space>.<param>`` entry to ``spec``.

    ``{choices: [...]}`` makes the parameter categorical (one choice fixes it); ``low``/``high``/
    ``log`` change a numeric range and are merged with the file's. For ``one_minus`` parameters
    the user writes the value range (``beta1: {low: 0.8, high: 0.99}``), converted to q here.
    Problems are relative to the override's key; ``source`` names the space file in hints.
    """
    if problem := _override_keys_problem(raw):
        return None, [problem]
    if not raw:
        return spec, []
    ranged = [k for k in ("low", "high", "log") if k in raw]
    if "choices" in raw:
        if ranged:
            return None, ["give either choices or low/high/log, not both"]
        return _override_choices(spec, raw["choices"])
    if spec.kind == "categorical":
        return None, [
            f"{spec.name} is categorical in {source}; use choices: [...] instead of "
            f"{'/'.join(ranged)}"
        ]
    return _override_range(spec, raw)


def _override_keys_problem(raw: Any) -> str | None:
    if not isinstance(raw, Mapping):
        return ("must be a mapping with low/high/log or choices (one choice fixes the value), "
                f"but got {raw!r}")
    unknown = sorted(str(k) for k in raw if k not in OVERRIDE_KEYS)
    if unknown:
        return f"unknown key {unknown[0]!r}; allowed: {', '.join(OVERRIDE_KEYS)}"
    return None


def _override_choices(spec: ParamSpec, choices: Any) -> tuple[ParamSpec | None, list[str]]:
    if not isinstance(choices, list) or not choices:
        return None, [f"choices must be a non-empty list, but got {choices!r}"]
    out = []
    for c in choices:
        if spec.kind != "categorical":
            if p := _number_problem("a choice", c, integer=spec.kind == "int"):
                return None, [f"choices: {p}"]
            if spec.one_minus and not 0 <= c < 1:
                return None, [f"choices: {spec.name} must lie in [0, 1), but got {c!r}"]
            c = float(c) if spec.kind == "float" else c
        if p := value_problem(spec.name, c):
            return None, [f"choices: {p}"]
        out.append(c)
    return ParamSpec(spec.name, "categorical", choices=tuple(out)), []


def _override_range(spec: ParamSpec, raw: Mapping[str, Any]) -> tuple[ParamSpec | None, list[str]]:
    problems = [
        p
        for key in ("low", "high")
        if key in raw and (p := _number_problem(key, raw[key], integer=spec.kind == "int"))
    ]
    if "log" in raw and not isinstance(raw["log"], bool):
        problems.append(f"log must be true or false, but got {raw['log']!r}")
    if problems:
        return None, problems
    if spec.one_minus:
        return _override_one_minus(spec, raw)
    low, high = raw.get("low", spec.low), raw.get("high", spec.high)
    if spec.kind == "float":
        low, high = float(low), float(high)
    new = ParamSpec(spec.name, spec.kind, low=low, high=high, log=raw.get("log", spec.log))
    problems = _range_problems(new)
    return (None, problems) if problems else (new, [])


def _override_one_minus(spec: ParamSpec,
                        raw: Mapping[str, Any]) -> tuple[ParamSpec | None, list[str]]:
    if raw.get("log") is False:
        return None, [
            f"{spec.name} is sampled as q = 1 - {spec.name} log-uniformly; "
            "log cannot be turned off (use choices for fixed values)"
        ]
    # Work in value space, where the user's numbers live: value = 1 - q.
    q_low, q_high = spec.bounds
    v_low = raw.get("low", _round(1.0 - float(q_high)))
    v_high = raw.get("high", _round(1.0 - float(q_low)))
    for key, v in (("low", v_low), ("high", v_high)):
        if key in raw and not 0 <= v < 1:
            return None, [f"{spec.name} must lie in [0, 1), but got {key}={v!r}"]
    if v_low > v_high:
        return None, [f"`low <= high` must hold, but got low={v_low!r}, high={v_high!r}"]
    new = ParamSpec(
        spec.name,
        "float",
        low=_round(1.0 - float(v_high)),
        high=_round(1.0 - float(v_low)),
        log=True,
        one_minus=True,
    )
    return new, []
