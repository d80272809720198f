"""Error formatting: a pydantic ``ValidationError`` as one line per bad field, each naming
the field as a user writes it (``optimizers[1]``, ``space_overrides.adam.lr``), the value and
what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ValidationError

__all__ = ["Problems", "field_path", "format_errors"]


class Problems(ValueError):
    """Complete messages (each naming its field) from a validator, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def field_path(parts: Iterable[str | int]) -> str:
    """``("optimizers", 1)`` -> ``optimizers[1]``; ``("resources", "gpus")`` ->
    ``resources.gpus``: a field as a user reads it ("" for the document itself)."""
    where = ""
    for part in parts:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where


def _model_at(model: type[BaseModel], parts: Iterable[str | int]) -> type[BaseModel]:
    """The model whose fields are at ``parts`` (``("resources",)`` -> ``Resources``)."""
    for part in parts:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def format_errors(error: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem of ``error``, raised validating ``model``.

    A validator's :class:`Problems` are kept as they are (they name their field); an
    unknown field lists the allowed ones of the model it is in.
    """
    problems: list[str] = []
    for item in error.errors():
        loc = field_path(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            problems.extend(cause.problems)  # complete messages that name their field
            continue
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_model_at(model, item["loc"][:-1]).model_fields)
            message = f"unknown field; allowed: {allowed}"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "literal_error":
            message = f"got {item.get('input')!r}; {item['msg'][0].lower()}{item['msg'][1:]}"
        elif "input" in item and not isinstance(item["input"], dict | list):
            message = f"got {item['input']!r}; {item['msg'][0].lower()}{item['msg'][1:]}"
        problems.append(f"{loc}: {message}")
    return problems
