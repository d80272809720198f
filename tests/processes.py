"""Processes and ports of the tests: free loopback ports, and processes found and ended by a
mark in their environment (`ray stop` would stop every Ray on the machine)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while they are picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A free loopback port."""
    return free_ports(1)[0]


def _status(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _status(pid) not in (None, "Z")


def processes_with(marker: str) -> list[int]:
    """Ids of this user's live processes whose environment holds ``marker`` (``KEY=value``);
    Linux's /proc (Ray renames its workers' command lines, not their environment)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or another user's
        if needle in environ and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def stop_processes(pids: list[int], *, grace: float = 15.0) -> list[int]:
    """SIGTERM ``pids`` (raylets first, the GCS last, as `ray stop` does), SIGKILL what is
    left after ``grace`` seconds; the ids still alive after that (none, normally)."""

    def rank(pid: int) -> int:
        try:
            name = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            return 1
        return 0 if "raylet" in name else 2 if "gcs_server" in name else 1

    _signal(sorted(pids, key=rank), signal.SIGTERM)
    alive = _wait_gone(pids, grace)
    _signal(alive, signal.SIGKILL)
    return _wait_gone(alive, 10)


