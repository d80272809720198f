"""The client side (``tuner submit --code DIR``): the folder packed as a deterministic zip.

Sorted entries, fixed timestamps and modes (the same tree gives the same bytes, so the same
hash), without version-control folders, virtualenvs, caches, ``.tuner`` or what the folder's
``.gitignore`` files ignore, and refused before any upload when over the cap. Imports neither
Ray nor the jobs store.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import PathSpec

from tuner.code._archive import MAX_ENTRIES, UNPACKED_FACTOR, mib, sha256_of
from tuner.errors import CodeError

__all__ = ["EXCLUDED_DIRS", "CodeArchive", "pack_directory"]

#: Folders never shipped: version control, virtualenvs, caches, tuner's own stores.
EXCLUDED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".tuner", "__pycache__", "node_modules", ".venv", "venv",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# A fixed timestamp (the zip format's earliest) so that the same tree gives the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)


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
        self._specs: list[tuple[Path, PathSpec]] = []

    def read(self, folder: Path) -> None:
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
        raise CodeError(_too_large(root, f"unpacks to {mib(unpacked)}",
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
        raise CodeError(_too_large(root, f"packs to {mib(len(data))}", max_bytes, sizes))
    return CodeArchive(data=data, sha256=sha256_of(data), files=[n for n, _ in files],
                       unpacked=unpacked)


def _too_large(root: Path, what: str, limit: int, sizes: list[tuple[int, str]], *,
               unpacked: bool = False) -> str:
    biggest = ", ".join(f"{name} ({mib(size)})" for size, name in sorted(sizes)[::-1][:3])
    cap = f"{mib(limit)} unpacked" if unpacked else mib(limit)
    return (f"--code: {str(root)!r} {what}, over the limit of {cap} (TUNER_MAX_CODE_MB); "
            f"biggest files: {biggest}; keep data sets out of the code folder (the task can "
            "read them from where the workers see them)")
