"""One agent per directory: an exclusive lock on the run and state directories.

Two agents sharing ``/run/vdsm`` (or a state directory) undo each other's work: one agent's
``disconnectStorageServer`` removed the links the other's domains used. vdsmd therefore
takes an exclusive ``flock`` on ``<dir>/vdsmd.lock`` at start and holds it for its lifetime;
a second agent on the same directory refuses to start, naming the holder's pid. The kernel
releases the lock when the holder dies, so a stale lock file never blocks a restart. The lock's
descriptor is close-on-exec: commands the agent starts (even those that outlive it, such as
a qemu-img in its own session) never hold it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "vdsmd.lock"
FILE_MODE = 0o640


class DirectoryInUse(Exception):
    """Another live agent holds the directory's lock."""


class DirLock:
    def __init__(self, directory: Path, what: str, *, mode: int = 0o777) -> None:
        """``what`` names the directory's setting in messages (``--run-dir``...); ``mode``
        is the directory's, if it has to be created (less the umask)."""
        self.directory = directory
        self.what = what
        self.mode = mode
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating the directory if needed) or raise DirectoryInUse."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=self.mode)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise DirectoryInUse(
                f"{self.directory} is in use by another vdsmd (pid {holder}): give each "
                f"agent its own {self.what}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        log.debug("locked %s", self.path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
