"""Process plumbing of the keeper and the writer: death signals, pid files, group kills.

Linux only (the agent's platform). ``PR_SET_PDEATHSIG`` makes the kernel signal a child when
the thread that forked it exits: the keeper and the writer are always started from their
parent's main thread, so the signal comes exactly when the parent process dies. A child
checks right after setting it that its parent is still the expected one, which closes the
race of a parent that died before the child asked.

A pid file holds ``pid starttime`` (the start time in clock ticks from /proc/<pid>/stat), so a
recycled pid is never mistaken for the process that wrote the file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, expected_parent: int) -> None:
    """Ask for ``sig`` when the parent dies; exit at once if it already has."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != expected_parent:
        os._exit(3)  # the parent died before we asked: nobody owns us


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def write_pidfile(path: Path, pid: int) -> None:
    started = start_time(pid)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid} {started}\n")
    tmp.replace(path)


def read_pidfile(path: Path) -> tuple[int, int] | None:
    try:
        pid, started = path.read_text().split()
        return int(pid), int(started)
    except (OSError, ValueError):
        return None


def alive(pid: int, started: int) -> bool:
    """Whether the process that wrote a pid file (pid and start time) still runs."""
    return start_time(pid) == started


def kill_recorded(path: Path, *, group: bool, timeout: float) -> bool:
    """SIGKILL the process a pid file names (and its group) and wait until it is gone.

    Returns True when it is gone (or was never there), False when it outlived ``timeout``
    (a process stuck in the kernel on a frozen filesystem cannot die until it is thawed)."""
    entry = read_pidfile(path)
    if entry is None:
        return True
    pid, started = entry
    if not alive(pid, started):
        return True
    log.warning("killing the leftover process %d named by %s", pid, path)
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    except PermissionError as e:
        if e.errno != errno.EPERM:
            raise
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return True
        time.sleep(0.01)
    return False


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group (the writer and everything it started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
