"""Reading an untrusted job document: the limits checked before validation (size, depth,
values, NUL characters; :func:`document_problems`, also applied to the API's JSON bodies) and
the job file reader (:func:`load_job_file`: binary and UTF-16 files, YAML alias bombs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuner.errors import SpecError
from tuner.spec._errors import field_path
from tuner.spec._schema import JobSpec, parse_job

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_VALUES",
    "document_problems",
    "load_job_file",
]

#: Limits of a job document, checked before validation: a real one is a few hundred bytes,
#: five levels deep, a few dozen values. They keep hostile documents (a body nested
#: thousands deep, a YAML alias bomb) from costing the process its stack or its memory.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 100_000
#: YAML aliases (``*name``) a job file may use; a bomb nests aliases of aliases.
MAX_ALIASES = 100


def _where(path: tuple[str | int, ...]) -> str:
    """``("optimizers", 1)`` -> ``optimizers[1]``, as validation messages name fields."""
    return field_path(path) or "job"


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
