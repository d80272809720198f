"""A user's code shipped with a job (``tuner submit job.yaml --code DIR``).

The code travels as one zip archive, addressed by its SHA-256:

- the CLI packs the folder with :func:`pack_directory`: deterministic (sorted entries, fixed
  timestamps and modes: the same tree gives the same hash), without version-control folders,
  virtualenvs, caches, ``.tuner`` or what ``.gitignore`` ignores, and refused before any
  upload when over the cap;
- the API checks it with :func:`check_archive` (size, a valid zip, no absolute paths, no
  ``..``, no symlinks, a capped unpacked size against zip bombs) and stores it in the jobs
  database (``tuner_code``), so a restarted server, or a second one on the same PostgreSQL,
  has it;
- the coordinator writes it to ``<TUNER_HOME>/code/<sha256>.zip`` (:func:`materialize`),
  puts it in the Ray cluster's package store and gives it to the worker actors as Ray's
  ``runtime_env`` ``working_dir`` (each node unpacks it once; :func:`runtime_env`). The job's
  ``requirements`` become ``runtime_env`` ``pip``.

The server and coordinator never import the code: only the Ray workers do.

Example::

    archive = pack_directory(Path("."), max_bytes=50 * 2**20)
    client.upload_code(archive.data)            # POST /v1/code -> {"sha256": ..., "size": ...}
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tuner.errors import CodeError

if TYPE_CHECKING:
    from tuner.config import Settings
    from tuner.spec import JobSpec

__all__ = [
    "EXCLUDED_DIRS",
    "MAX_ENTRIES",
    "UNPACKED_FACTOR",
    "CodeArchive",
    "check_archive",
    "materialize",
    "pack_directory",
    "runtime_env",
    "sha256_of",
    "upload_to_ray",
    "worker_failure",
]

#: Folders never shipped: version control, virtualenvs, caches, tuner's own stores.
EXCLUDED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".tuner", "__pycache__", "node_modules", ".venv", "venv",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
#: An archive may unpack to this many times its cap (source compresses 3-5x; a zip bomb
#: compresses a thousandfold).
UNPACKED_FACTOR = 10
#: More files than this is not a code folder.
MAX_ENTRIES = 20_000
# A fixed timestamp (the zip format's earliest) so that the same tree gives the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mib(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} bytes"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


@dataclass(frozen=True)
class CodeArchive:
    """A packed code folder: the zip's bytes, their SHA-256, and what went in."""

    data: bytes
    sha256: str
    files: list[str] = field(default_factory=list)
    unpacked: int = 0

    @property
    def size(self) -> int:
        return len(self.data)


def _is_virtualenv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()


class _Ignored:
    """The ``.gitignore`` files met on the way down (git's own pattern rules, each file
    relative to its folder), so that data and checkpoints a project keeps out of git stay
    out of its code archive too."""

    def __init__(self) -> None:
        self._specs: list[tuple[Path, Any]] = []

    def read(self, folder: Path) -> None:
        from pathspec import PathSpec

        path = folder / ".gitignore"
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            self._specs.append((folder, PathSpec.from_lines("gitwildmatch", lines)))

    def __call__(self, path: Path, *, is_dir: bool) -> bool:
        for base, spec in self._specs:
            if base in path.parents:
                relative = path.relative_to(base).as_posix() + ("/" if is_dir else "")
                if spec.match_file(relative):
                    return True
        return False


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(archive name, file) of every file shipped from ``root``, sorted by name."""
    found: list[tuple[str, Path]] = []
    ignored = _Ignored()
    for folder, dirs, files in os.walk(root):  # symlinked folders are not followed
        here = Path(folder)
        ignored.read(here)
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS and not _is_virtualenv(here / d)
                   and not (here / d).is_symlink() and not ignored(here / d, is_dir=True)]
        for name in files:
            path = here / name
            if (name.endswith(_EXCLUDED_SUFFIXES) or not path.is_file()
                    or ignored(path, is_dir=False)):
                continue  # a dangling symlink, a socket, ...
            found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def pack_directory(root: Path, *, max_bytes: int) -> CodeArchive:
    """Zip the folder ``root`` in memory, deterministically.

    Files are stored under their path relative to ``root`` (the workers' working directory
    is ``root``), sorted, with a fixed timestamp and mode (0644, or 0755 when executable);
    a symlinked file is stored as a copy. Left out: :data:`EXCLUDED_DIRS`, any virtualenv
    (a folder with ``pyvenv.cfg``), ``*.pyc``, and what the folder's ``.gitignore`` files
    ignore.

    Raises:
        CodeError: ``root`` is not a folder, has no file, or the archive (or what it unpacks
            to) is over the cap; the message names the biggest files.
    """
    if not root.is_dir():
        raise CodeError(f"--code: {str(root)!r} is not a folder")
    files = _walk(root)
    if not files:
        raise CodeError(f"--code: {str(root)!r} has no file to ship")
    if len(files) > MAX_ENTRIES:
        raise CodeError(f"--code: {str(root)!r} has {len(files)} files; the limit is "
                        f"{MAX_ENTRIES} (leave data and build folders out)")
    sizes = [(path.stat().st_size, name) for name, path in files]
    unpacked = sum(size for size, _ in sizes)
    if unpacked > max_bytes * UNPACKED_FACTOR:
        raise CodeError(_too_large(root, f"unpacks to {_mib(unpacked)}",
                                   max_bytes * UNPACKED_FACTOR, sizes, unpacked=True))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=6) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=6)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise CodeError(_too_large(root, f"packs to {_mib(len(data))}", max_bytes, sizes))
    return CodeArchive(data=data, sha256=sha256_of(data), files=[n for n, _ in files],
                       unpacked=unpacked)


def _too_large(root: Path, what: str, limit: int, sizes: list[tuple[int, str]], *,
               unpacked: bool = False) -> str:
    biggest = ", ".join(f"{name} ({_mib(size)})" for size, name in sorted(sizes)[::-1][:3])
    cap = f"{_mib(limit)} unpacked" if unpacked else _mib(limit)
    return (f"--code: {str(root)!r} {what}, over the limit of {cap} (TUNER_MAX_CODE_MB); "
            f"biggest files: {biggest}; keep data sets out of the code folder (the task can "
            "read them from where the workers see them)")


def check_archive(data: bytes, *, max_bytes: int) -> str:
    """Check an uploaded code archive; its SHA-256.

    Refused: over ``max_bytes``; not a zip; an entry with an absolute path, a ``..`` part, a
    backslash or a NUL; a symlink; duplicate names; more than :data:`MAX_ENTRIES` entries;
    more than ``UNPACKED_FACTOR * max_bytes`` unpacked (a zip bomb); a corrupt entry.

    Raises:
        CodeError: one line saying what is wrong (``too_large`` set for the size limits).
    """
    if len(data) > max_bytes:
        raise CodeError(f"code: the archive is {_mib(len(data))}, over the limit of "
                        f"{_mib(max_bytes)} (TUNER_MAX_CODE_MB)", too_large=True)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise CodeError(f"code: not a zip archive ({e})") from None
    with archive:
        infos = archive.infolist()
        if not infos:
            raise CodeError("code: the archive is empty")
        if len(infos) > MAX_ENTRIES:
            raise CodeError(f"code: the archive has {len(infos)} entries; the limit is "
                            f"{MAX_ENTRIES}")
        seen: set[str] = set()
        for info in infos:
            problem = _entry_problem(info)
            if problem is not None:
                raise CodeError(f"code: entry {info.filename!r}: {problem}")
            if info.filename in seen:
                raise CodeError(f"code: entry {info.filename!r} appears twice")
            seen.add(info.filename)
        unpacked = sum(info.file_size for info in infos)
        limit = max_bytes * UNPACKED_FACTOR
        if unpacked > limit:
            raise CodeError(f"code: the archive unpacks to {_mib(unpacked)}, over the limit "
                            f"of {_mib(limit)} ({UNPACKED_FACTOR} x TUNER_MAX_CODE_MB)",
                            too_large=True)
        try:
            # Reads every entry (at most ``limit`` bytes: zipfile stops at the declared
            # size) and checks its CRC, so that a broken archive fails here, not on Ray.
            bad = archive.testzip()
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as e:
            raise CodeError(f"code: the archive cannot be read: {e}") from None
        if bad is not None:
            raise CodeError(f"code: entry {bad!r} is corrupt (its CRC does not match)")
    return sha256_of(data)


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name or "\\" in name:
        return "a file name may not contain a NUL or a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute paths are not allowed"
    if ".." in PurePosixPath(name).parts:
        return "'..' is not allowed in a path (it would write outside the working directory)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlinks are not allowed"
    return None


def materialize(settings: Settings, sha256: str, data: bytes) -> Path:
    """Write an archive to ``<TUNER_HOME>/code/<sha256>.zip`` (atomically; kept when it is
    there with the right hash); its absolute path.

    Raises:
        CodeError: ``data`` does not have the hash ``sha256`` (a damaged store).
    """
    if sha256_of(data) != sha256:
        raise CodeError(f"code {sha256}: the stored archive does not match its hash")
    folder = (settings.home / "code").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha256}.zip"
    if path.is_file() and sha256_of(path.read_bytes()) == sha256:
        return path
    partial = path.with_name(f".{sha256}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def upload_to_ray(path: Path) -> str:
    """Put a zip in the Ray cluster's package store (its GCS) once; its ``gcs://`` URI.

    An actor's ``runtime_env`` takes a package URI only (a local path works at the level of
    ``ray.init`` alone), so tuner does what ``ray.init(runtime_env={"working_dir": zip})``
    does: the same content-addressed URI (``_ray_pkg_<sha1>.zip``), uploaded when the
    cluster does not have it, pinned for Ray's grace period until the actors reference it.
    Each node downloads and unpacks it once and caches it
    (``RAY_RUNTIME_ENV_WORKING_DIR_CACHE_SIZE_GB``). Needs a connected Ray.
    """
    from ray._private.runtime_env.packaging import (
        get_uri_for_package,
        package_exists,
        pin_runtime_env_uri,
        upload_package_to_gcs,
    )

    uri = get_uri_for_package(path)
    if not package_exists(uri):
        upload_package_to_gcs(uri, path.read_bytes())
    pin_runtime_env_uri(uri)
    return str(uri)


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


def runtime_env(settings: Settings, spec: JobSpec) -> dict[str, Any] | None:
    """The Ray ``runtime_env`` of a job's worker actors: its code as ``working_dir`` (read
    from the jobs database and materialized), its ``requirements`` as ``pip``; ``None``
    for a job with neither.

    Raises:
        TaskError: the job's code is not in the jobs database.
    """
    env: dict[str, Any] = {}
    if spec.code:
        from tuner import store
        from tuner.errors import TaskError

        with store.session_scope(settings.database_url) as session:
            data = store.code_bytes(session, spec.code)
        if data is None:
            raise TaskError(f"code: no code archive {spec.code} in the jobs database; "
                            "submit the job again with tuner submit --code DIR")
        env["working_dir"] = upload_to_ray(materialize(settings, spec.code, data))
    if spec.requirements:
        env["pip"] = list(spec.requirements)
    return env or None
