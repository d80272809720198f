"""The code archive: what the CLI packs (exclusions, determinism, the cap) and what the
server accepts (size, zip, paths, symlinks, zip bombs)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tuner.code import (
    UNPACKED_FACTOR,
    check_archive,
    materialize,
    pack_directory,
    sha256_of,
    worker_failure,
)
from tuner.config import Settings
from tuner.engine.cluster import worker_key
from tuner.errors import CodeError
from tuner.spec import parse_job

MiB = 2**20


def project(root: Path) -> Path:
    files = {
        "train.py": "print('hi')\n",
        "mymodel/__init__.py": "",
        "mymodel/net.py": "import torch\n",
        "mymodel/data/labels.csv": "a,b\n1,2\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".hg/store": "x",
        ".tuner/tuner.db": "x",
        ".venv/lib/site.py": "x",
        "venv/bin/python": "x",
        "env/pyvenv.cfg": "home = /usr/bin\n",   # a virtualenv by any name
        "env/lib/big.py": "x",
        "mymodel/__pycache__/net.cpython-311.pyc": "x",
        "mymodel/stale.pyc": "x",
        "web/node_modules/left/index.js": "x",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_pack_ships_the_code_and_leaves_out_vcs_virtualenvs_caches(tmp_path: Path) -> None:
    archive = pack_directory(project(tmp_path), max_bytes=MiB)

    assert archive.files == ["mymodel/__init__.py", "mymodel/data/labels.csv",
                             "mymodel/net.py", "train.py"]
    with zipfile.ZipFile(io.BytesIO(archive.data)) as z:
        assert z.namelist() == archive.files
        assert z.read("mymodel/net.py") == b"import torch\n"
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert archive.sha256 == sha256_of(archive.data)
    assert check_archive(archive.data, max_bytes=MiB) == archive.sha256


def test_pack_leaves_out_what_gitignore_ignores(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    (root / ".gitignore").write_text("# data stays local\n/data/\n*.ckpt\n!keep.ckpt\n")
    (root / "data").mkdir()
    (root / "data" / "train.npy").write_text("x")
    (root / "mymodel" / "data" / "w.ckpt").write_text("x")
    (root / "mymodel" / "data" / "keep.ckpt").write_text("x")
    (root / "mymodel" / ".gitignore").write_text("scratch.py\n")
    (root / "mymodel" / "scratch.py").write_text("x")
    (root / "scratch.py").write_text("x")  # the inner .gitignore is about mymodel/ only

    archive = pack_directory(root, max_bytes=MiB)

    assert archive.files == [".gitignore", "mymodel/.gitignore", "mymodel/__init__.py",
                             "mymodel/data/keep.ckpt", "mymodel/data/labels.csv",
                             "mymodel/net.py", "scratch.py", "train.py"]


def test_pack_is_deterministic(tmp_path: Path) -> None:
    first = pack_directory(project(tmp_path / "a"), max_bytes=MiB)
    second = project(tmp_path / "b")
    os.utime(second / "train.py", (0, 0))  # other times, the same tree
    (second / "mymodel" / "__pycache__" / "other.pyc").write_text("y")

    assert pack_directory(second, max_bytes=MiB).sha256 == first.sha256
    (second / "train.py").write_text("print('changed')\n")
    assert pack_directory(second, max_bytes=MiB).sha256 != first.sha256


def test_pack_keeps_the_executable_bit_and_copies_symlinked_files(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link.py").symlink_to(root / "train.py")
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)  # not followed

    archive = pack_directory(root, max_bytes=MiB)

    with zipfile.ZipFile(io.BytesIO(archive.data)) as z:
        assert stat.S_IMODE(z.getinfo("run.sh").external_attr >> 16) == 0o755
        assert stat.S_IMODE(z.getinfo("train.py").external_attr >> 16) == 0o644
        assert z.read("link.py") == b"print('hi')\n"
    assert not any(name.startswith("outside/") for name in archive.files)


def test_pack_refuses_over_the_cap_naming_the_biggest_files(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    (root / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "mymodel" / "data" / "x.npy").write_bytes(os.urandom(100_000))

    with pytest.raises(CodeError) as error:
        pack_directory(root, max_bytes=200_000)

    message = str(error.value)
    assert message.startswith(f"--code: {str(root)!r} packs to 39")  # random data: ~391 KiB
    assert message.endswith(
        " KiB, over the limit of 195.3 KiB (TUNER_MAX_CODE_MB); biggest files: "
        "weights.bin (293.0 KiB), mymodel/data/x.npy (97.7 KiB), mymodel/net.py (13 bytes); "
        "keep data sets out of the code folder (the task can read them from where the "
        "workers see them)"
    )


def test_pack_refuses_what_unpacks_too_large_before_reading_it(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    with (root / "zeros.bin").open("wb") as f:
        f.truncate(11 * 1000)  # compresses to nothing, unpacks to 11x the cap

    with pytest.raises(CodeError, match=r"unpacks to 10\.7 KiB, over the limit of 9\.8 KiB "
                                        r"unpacked"):
        pack_directory(root, max_bytes=1000)


def test_pack_refuses_what_is_no_code_folder(tmp_path: Path) -> None:
    with pytest.raises(CodeError, match="is not a folder"):
        pack_directory(tmp_path / "nope", max_bytes=MiB)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("x")
    with pytest.raises(CodeError, match="has no file to ship"):
        pack_directory(tmp_path, max_bytes=MiB)


def zip_of(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(("entries", "message"), [
    ({"../evil.py": b""}, "code: entry '../evil.py': '..' is not allowed in a path (it would "
                          "write outside the working directory)"),
    ({"a/../../evil.py": b""}, "code: entry 'a/../../evil.py': '..' is not allowed in a path "
                               "(it would write outside the working directory)"),
    ({"/etc/evil.py": b""}, "code: entry '/etc/evil.py': absolute paths are not allowed"),
    ({"C:/evil.py": b""}, "code: entry 'C:/evil.py': absolute paths are not allowed"),
    ({"a\\..\\evil.py": b""}, "code: entry 'a\\\\..\\\\evil.py': a file name may not contain "
                              "a NUL or a backslash"),
])
def test_check_refuses_paths_outside_the_folder(entries: dict[str, bytes],
                                                message: str) -> None:
    with pytest.raises(CodeError) as error:
        check_archive(zip_of(entries), max_bytes=MiB)
    assert str(error.value) == message
    assert not error.value.too_large


def test_check_refuses_symlinks_duplicates_and_non_zips() -> None:
    with pytest.raises(CodeError, match="^code: entry 'passwd': symlinks are not allowed$"):
        check_archive(zip_of({"a.py": b""}, symlink="passwd"), max_bytes=MiB)
    with pytest.raises(CodeError, match=r"^code: not a zip archive \(File is not a zip file\)$"):
        check_archive(b"PK but not really", max_bytes=MiB)
    with pytest.raises(CodeError, match="^code: the archive is empty$"):
        check_archive(zip_of({}), max_bytes=MiB)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z, pytest.warns(UserWarning, match="Duplicate"):
        z.writestr("a.py", b"1")
        z.writestr("a.py", b"2")
    with pytest.raises(CodeError, match="^code: entry 'a.py' appears twice$"):
        check_archive(buffer.getvalue(), max_bytes=MiB)


def test_check_refuses_a_zip_bomb_and_an_oversize_archive() -> None:
    bomb = zip_of({"zeros.bin": bytes(UNPACKED_FACTOR * 10_000 + 1)})
    assert len(bomb) < 10_000  # small packed, huge unpacked

    with pytest.raises(CodeError) as error:
        check_archive(bomb, max_bytes=10_000)
    assert str(error.value) == ("code: the archive unpacks to 97.7 KiB, over the limit of "
                                "97.7 KiB (10 x TUNER_MAX_CODE_MB)")
    assert error.value.too_large

    with pytest.raises(CodeError) as error:
        check_archive(zip_of({"a.bin": os.urandom(5000)}), max_bytes=1000)
    assert str(error.value) == ("code: the archive is 5.0 KiB, over the limit of 1000 bytes "
                                "(TUNER_MAX_CODE_MB)")
    assert error.value.too_large


def test_check_refuses_a_corrupt_entry() -> None:
    data = bytearray(zip_of({"a.py": b"print('x')\n" * 50}))
    offset = data.index(b"a.py") + len(b"a.py") + 5  # inside the compressed data
    data[offset] ^= 0xFF
    with pytest.raises(CodeError, match="^code: (entry 'a.py' is corrupt|the archive cannot "
                                        "be read)"):
        check_archive(bytes(data), max_bytes=MiB)


def test_materialize_writes_once_and_checks_the_hash(tmp_path: Path) -> None:
    # The field's alias: mypy knows pydantic's fields by their names only.
    settings = Settings(TUNER_HOME=tmp_path / "home")  # type: ignore[call-arg]
    data = zip_of({"a.py": b"x = 1\n"})
    sha = sha256_of(data)

    path = materialize(settings, sha, data)

    assert path == (tmp_path / "home" / "code" / f"{sha}.zip").resolve()
    assert path.read_bytes() == data
    assert materialize(settings, sha, data) == path
    with pytest.raises(CodeError, match="does not match its hash"):
        materialize(settings, "0" * 64, data)


# What Ray 2.60 says when an actor's constructor raises (ActorDiedError's text).
RAY_TEXT = """The actor died because of an error raised in its creation task, \x1b[36mray::\
_Worker.__init__()\x1b[39m (pid=11940, ip=192.0.2.2, actor_id=6c21, repr=<Worker>)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/work/tuner/workers/actor.py", line 64, in __init__
    self._factory = resolve_task(task)
  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed
  File "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_612e79df/mymodel/\
blobs.py", line 7, in <module>
    raise RuntimeError("the GPU driver is missing")
RuntimeError: the GPU driver is missing"""


def test_a_workers_failure_is_one_line_in_the_users_code() -> None:
    assert worker_failure(RuntimeError(RAY_TEXT)) == (
        "RuntimeError: the GPU driver is missing (mymodel/blobs.py, line 7)")
    text = RAY_TEXT.replace("RuntimeError: the GPU", "tuner.errors.TaskError: the GPU")
    text = text.replace("working_dir_files/_ray_pkg_612e79df/", "")
    assert worker_failure(RuntimeError(text)) == (
        "TaskError: the GPU driver is missing (/tmp/ray/session_1/runtime_resources/"
        "mymodel/blobs.py, line 7)")
    assert worker_failure(ValueError("no traceback here")) == "ValueError: no traceback here"


def test_a_requirement_pip_cannot_install_is_named() -> None:
    class RuntimeEnvSetupError(Exception):  # the name Ray raises it under
        pass

    text = """Failed to set up runtime environment.
  File "/venv/ray/_private/runtime_env/utils.py", line 105, in check_output_cmd
ray._private.runtime_env.utils.SubprocessCalledProcessError: Run cmd[9] failed with details.
Command '['/tmp/ray/virtualenv/bin/python', '-m', 'pip', 'install']' returned non-zero status 1.
Last 50 lines of stdout:
    Looking in indexes: https://pypi.org/simple
    ERROR: Could not find a version that satisfies the requirement nosuch==1.0 (from versions:)
    ERROR: No matching distribution found for nosuch==1.0
"""
    assert worker_failure(RuntimeEnvSetupError(text)) == (
        "pip cannot install the job's requirements: No matching distribution found for "
        "nosuch==1.0")


def test_workers_kept_warm_serve_only_jobs_with_the_same_code_and_requirements() -> None:
    job = {"task": "mymodel.tasks:build", "optimizers": ["adam"], "code": "a" * 64}
    keys = {worker_key(parse_job(doc)) for doc in (
        job, job | {"code": "b" * 64}, job | {"requirements": ["termcolor>=2"]})}
    assert len(keys) == 3
    assert worker_key(parse_job(job)) == worker_key(parse_job(job | {"trials": 7}))


def test_packing_and_checking_load_neither_ray_nor_the_store(tmp_path: Path) -> None:
    # The CLI packs and the API checks with tuner.code: a fresh interpreter, as a user's
    # shell has, imports the package and does both.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tuner.code import check_archive, pack_directory, worker_failure\n"
        f"archive = pack_directory(Path({str(project(tmp_path))!r}), max_bytes=2**20)\n"
        "assert check_archive(archive.data, max_bytes=2**20) == archive.sha256\n"
        "worker_failure(RuntimeError('x'))\n"
        "print(sorted(m for m in ('ray', 'tuner.store', 'sqlalchemy', 'torch', 'mlflow', "
        "'optuna') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
