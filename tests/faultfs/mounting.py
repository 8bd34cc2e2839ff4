"""Start a faultfs process, wait until its mount is live, and always take it down again.

:func:`faultfs_mount` is the context manager behind the ``faultfs`` fixture. Its cleanup runs
whatever happened in the test: it releases every hang, unmounts (lazily when the mount is
busy or its server is dead), kills the process (SIGKILL, waited for with a bound) and
checks that the mount is gone from this mount namespace.

Other mount namespaces created while the mount exists (libvirt gives each QEMU one, and
tests with a private libvirtd make their own) get a copy of it that our ``umount`` does not
remove: it keeps the FUSE connection open, so the server would not exit by itself. Stopping
the server closes the connection; those copies then answer ENOTCONN until their namespace
ends, and nothing can block on them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.faultfs.control import ControlError, FaultControl

TOP = Path(__file__).resolve().parent.parent.parent

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
"""How long a SIGKILLed server may take to be gone."""


def mount_entry(mountpoint: Path) -> str | None:
    """The filesystem type mounted at ``mountpoint`` in this namespace, None if none.

    Never touches the mount itself (its root may be held by a hang or its server dead).
    """
    target = str(Path(os.path.realpath(mountpoint.parent)) / mountpoint.name)
    found = None
    with Path("/proc/self/mounts").open() as f:
        for line in f:
            fields = line.split()
            if fields[1] == target:
                found = fields[2]
    return found


def is_faultfs_mounted(mountpoint: Path) -> bool:
    return mount_entry(mountpoint) == "fuse.faultfs"


def unmount(mountpoint: Path, *, attempts: int = 10) -> None:
    """Unmount every faultfs mounted at ``mountpoint``: plain umount a few times, then lazy."""
    for _ in range(attempts):
        if not is_faultfs_mounted(mountpoint):
            return
        result = subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30,
                                check=False)
        if result.returncode != 0:
            time.sleep(0.1)
    for _ in range(attempts):
        if not is_faultfs_mounted(mountpoint):
            return
        subprocess.run(["umount", "--lazy", str(mountpoint)], capture_output=True, timeout=30,
                       check=False)


class FaultFSMount:
    """A running faultfs: unpacks as ``(mountpoint, control, source)``."""

    def __init__(self, source: Path, mountpoint: Path, control: FaultControl,
                 process: subprocess.Popen[bytes], log: Path) -> None:
        self.source = source
        self.mountpoint = mountpoint
        self.control = control
        self.process = process
        self.log = log

    def __iter__(self) -> Iterator[object]:
        return iter((self.mountpoint, self.control, self.source))

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the server (a crash): callers then get ENOTCONN; the mount stays until
        cleanup unmounts it."""
        self.process.kill()
        self.process.wait(STOP_TIMEOUT)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _wait_live(fs: FaultFSMount, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if fs.process.poll() is not None:
            raise RuntimeError(f"faultfs exited with {fs.process.returncode}:\n{fs.log_text()}")
        with contextlib.suppress(ControlError, OSError):
            if is_faultfs_mounted(fs.mountpoint) and fs.control.ping() == fs.pid:
                fs.mountpoint.stat()  # answered by the server: the loop runs
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"faultfs not mounted at {fs.mountpoint} in {timeout} s:\n"
                               f"{fs.log_text()}")
        time.sleep(0.05)


def stop(fs: FaultFSMount) -> None:
    """Release hangs, unmount, stop the process; raise if the mount is still there."""
    if fs.process.poll() is None:
        with contextlib.suppress(ControlError, OSError):
            fs.control.clear()
    unmount(fs.mountpoint)
    # A copy of the mount in another namespace keeps the connection open, so the server may
    # not exit by itself after the unmount; killing it closes the FUSE device, which ends the
    # connection everywhere. There is nothing left for a graceful stop to do.
    if fs.process.poll() is None:
        fs.process.kill()
    try:
        fs.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"faultfs process {fs.pid} survived SIGKILL") from None
    unmount(fs.mountpoint)  # the server may have died with its mount still in place
    if is_faultfs_mounted(fs.mountpoint):
        raise RuntimeError(f"faultfs still mounted at {fs.mountpoint}")


@contextlib.contextmanager
def faultfs_mount(directory: Path, *, source: Path | None = None,
                  mountpoint: Path | None = None,
                  start_timeout: float = START_TIMEOUT) -> Iterator[FaultFSMount]:
    """A faultfs serving ``source`` (default ``directory/faultfs-src``) at ``mountpoint``
    (default ``directory/faultfs``), its log in ``directory/faultfs.log``; stopped at the end.
    """
    source = source or directory / "faultfs-src"
    mountpoint = mountpoint or directory / "faultfs"
    source.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    # a unix socket path must fit in 108 bytes: the control socket lives in a short dir
    sockdir = Path(tempfile.mkdtemp(prefix="faultfs-"))
    log = directory / "faultfs.log"
    control = FaultControl(sockdir / "control.sock")
    env = {**os.environ, "PYTHONPATH": str(TOP)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faultfs", str(source), str(mountpoint),
             "--control", control.path, "--exit-with-parent"],
            stdout=out, stderr=subprocess.STDOUT, cwd=TOP, env=env, start_new_session=True)
    fs = FaultFSMount(source, mountpoint, control, process, log)
    try:
        _wait_live(fs, start_timeout)
        yield fs
    finally:
        try:
            stop(fs)
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)
