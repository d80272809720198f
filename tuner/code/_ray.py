"""Ray packaging: a job's code and requirements on the workers, as the actors'
``runtime_env``.

The coordinator writes the archive, read from the jobs database (so a restarted server, or a
second one on the same PostgreSQL, has it), to ``<TUNER_HOME>/code/<sha256>.zip``
(:func:`materialize`), puts it in the Ray cluster's package store (:func:`upload_to_ray`) and
gives it to the worker actors as ``working_dir``; the job's ``requirements`` become ``pip``
(:func:`runtime_env`). Each node unpacks it once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.code._archive import sha256_of
from tuner.errors import CodeError, TaskError

if TYPE_CHECKING:
    from tuner.config import Settings
    from tuner.spec import JobSpec

__all__ = ["materialize", "runtime_env", "upload_to_ray"]


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

        with store.session_scope(settings.database_url) as session:
            data = store.code_bytes(session, spec.code)
        if data is None:
            raise TaskError(f"code: no code archive {spec.code} in the jobs database; "
                            "submit the job again with tuner submit --code DIR")
        env["working_dir"] = upload_to_ray(materialize(settings, spec.code, data))
    if spec.requirements:
        env["pip"] = list(spec.requirements)
    return env or None
