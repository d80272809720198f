"""A user's code shipped with a job (``tuner submit job.yaml --code DIR``).

The code travels as one zip archive, addressed by its SHA-256, through four parts:

- ``_pack`` (the CLI): :func:`pack_directory` packs the folder deterministically (sorted
  entries, fixed timestamps and modes: the same tree gives the same hash), without
  version-control folders, virtualenvs, caches, ``.tuner`` or what ``.gitignore`` ignores,
  and refuses it before any upload when over the cap;
- ``_check`` (the API): :func:`check_archive` checks an upload (size, a valid zip, no
  absolute paths, no ``..``, no symlinks, a capped unpacked size against zip bombs) before
  it is stored in the jobs database (``tuner_code``), so a restarted server, or a second one
  on the same PostgreSQL, has it;
- ``_ray`` (the coordinator): :func:`materialize` writes it to
  ``<TUNER_HOME>/code/<sha256>.zip``, :func:`upload_to_ray` puts it in the Ray cluster's
  package store, and :func:`runtime_env` gives it to the worker actors as Ray's
  ``runtime_env`` ``working_dir`` (each node unpacks it once); the job's ``requirements``
  become ``runtime_env`` ``pip``;
- ``_failure``: :func:`worker_failure`, what a worker's failure in that code says, on one
  line.

``_archive`` holds what the sides agree on (the hash, the limits). The server and
coordinator never import the code: only the Ray workers do. ``import tuner.code`` loads
neither Ray nor the jobs store; the Ray side imports them when it runs.

Example::

    archive = pack_directory(Path("."), max_bytes=50 * 2**20)
    client.upload_code(archive.data)            # POST /v1/code -> {"sha256": ..., "size": ...}
"""

from __future__ import annotations

from tuner.code._archive import MAX_ENTRIES, UNPACKED_FACTOR, sha256_of
from tuner.code._check import check_archive
from tuner.code._failure import worker_failure
from tuner.code._pack import EXCLUDED_DIRS, CodeArchive, pack_directory
from tuner.code._ray import materialize, runtime_env, upload_to_ray

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
