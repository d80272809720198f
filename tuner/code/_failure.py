"""Ray error parsing: a worker's failure, said on one line (the user's exception and where
it was raised in the shipped code)."""

from __future__ import annotations

import re

__all__ = ["worker_failure"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FILE = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)')
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*(?P<name>[A-Za-z_]\w*): (?P<text>.+)$")
# Where Ray unpacks a working_dir on a node: paths under it are the user's own files.
_PACKAGE_DIR = re.compile(r"^.*/_ray_pkg_[0-9a-f]+/")


def worker_failure(error: BaseException) -> str:
    """What a Ray worker's failure says, on one line: the user's exception and where it was
    raised in the shipped code (``RuntimeError: no GPU (mymodel/tasks.py, line 12)``).

    Ray wraps an error of an actor's constructor in an ``ActorDiedError`` whose text is the
    worker's whole traceback; the last exception line of it, and the last frame in the
    shipped code (or else the last frame), are what a user needs.
    """
    cause = getattr(error, "cause", None)
    text = _ANSI.sub("", str(error))
    lines = text.splitlines()
    if type(error).__name__ == "RuntimeEnvSetupError":
        # pip's own last word (Ray quotes its output): "No matching distribution found for x".
        said = [line.strip()[len("ERROR: "):] for line in lines
                if line.strip().startswith("ERROR: ")]
        if said:
            return f"pip cannot install the job's requirements: {said[-1]}"
    exception = None
    for line in reversed(lines):
        match = _EXCEPTION.match(line)
        if match and not line.startswith((" ", "\t")):
            exception = f"{match['name']}: {match['text'].strip()}"
            break
    if exception is None:
        if isinstance(cause, BaseException):
            return f"{type(cause).__name__}: {cause}"
        first = lines[0] if lines else ""
        return f"{type(error).__name__}: {first}".rstrip(": ")
    frames = [m for m in map(_FILE.match, lines) if m]
    shipped = [m for m in frames if _PACKAGE_DIR.match(m["path"])]
    candidates = shipped or frames
    if not candidates:
        return exception
    frame = candidates[-1]
    path = _PACKAGE_DIR.sub("", frame["path"])
    return f"{exception} ({path}, line {frame['line']})"
