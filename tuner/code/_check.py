"""The server side of an upload (``POST /v1/code``): an archive checked before it is stored.

Its size, a valid zip, no absolute paths, no ``..``, no symlinks, no duplicate names, a
capped number of entries and a capped unpacked size (zip bombs), every entry's CRC. Imports
no Ray.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import PurePosixPath

from tuner.code._archive import MAX_ENTRIES, UNPACKED_FACTOR, mib, sha256_of
from tuner.errors import CodeError

__all__ = ["check_archive"]


def check_archive(data: bytes, *, max_bytes: int) -> str:
    """Check an uploaded code archive; its SHA-256.

    Refused: over ``max_bytes``; not a zip; an entry with an absolute path, a ``..`` part, a
    backslash or a NUL; a symlink; duplicate names; more than :data:`MAX_ENTRIES` entries;
    more than ``UNPACKED_FACTOR * max_bytes`` unpacked (a zip bomb); a corrupt entry.

    Raises:
        CodeError: one line saying what is wrong (``too_large`` set for the size limits).
    """
    if len(data) > max_bytes:
        raise CodeError(f"code: the archive is {mib(len(data))}, over the limit of "
                        f"{mib(max_bytes)} (TUNER_MAX_CODE_MB)", too_large=True)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise CodeError(f"code: not a zip archive ({e})") from None
    with archive:
        infos = archive.infolist()
        _check_entries(infos)
        _check_contents(archive, infos, max_bytes=max_bytes)
    return sha256_of(data)


def _check_entries(infos: list[zipfile.ZipInfo]) -> None:
    """Some entries, not too many, each with a safe name that appears once."""
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


def _check_contents(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], *,
                    max_bytes: int) -> None:
    """The unpacked size under its limit (a zip bomb) and every entry's CRC right."""
    unpacked = sum(info.file_size for info in infos)
    limit = max_bytes * UNPACKED_FACTOR
    if unpacked > limit:
        raise CodeError(f"code: the archive unpacks to {mib(unpacked)}, over the limit "
                        f"of {mib(limit)} ({UNPACKED_FACTOR} x TUNER_MAX_CODE_MB)",
                        too_large=True)
    try:
        # Reads every entry (at most ``limit`` bytes: zipfile stops at the declared
        # size) and checks its CRC, so that a broken archive fails here, not on Ray.
        bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as e:
        raise CodeError(f"code: the archive cannot be read: {e}") from None
    if bad is not None:
        raise CodeError(f"code: entry {bad!r} is corrupt (its CRC does not match)")


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
