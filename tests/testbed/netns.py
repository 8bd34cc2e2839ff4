"""Network namespaces for the test bed: create, enter (one thread at a time), sweep.

A bed's namespaces are named ``vdsmtb-<pid>-<serial>-<role>``: ``<pid>`` is the test process
that made them, so a later bed can tell leftovers of a process that died before its teardown
(SIGKILLed pytest) from the namespaces of tests running right now (other xdist workers,
other checkouts on the same machine), and remove only the former (:func:`sweep_stale`).

:func:`entered` moves the *calling thread* into a namespace for a block (``setns(2)`` is
per thread). Threads started inside the block stay in that namespace for good: ZeroMQ
creates its I/O threads when a context makes its first socket, so a context made inside the
block connects from the namespace for the rest of its life (see ``tests.testbed.agent``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PREFIX = "vdsmtb"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT = 30.0

_libc = ctypes.CDLL(None, use_errno=True)
_NAME = re.compile(rf"^{PREFIX}-(\d+)-")


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS`` (bounded); its stdout. ``check``: raise on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def path(name: str) -> Path:
    return NETNS_DIR / name


def add(name: str) -> None:
    ip("netns", "add", name)


def exists(name: str) -> bool:
    return path(name).exists()


def pids(name: str) -> list[int]:
    """The processes whose network namespace is ``name``."""
    out = ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_all(name: str, timeout: float = 15.0) -> list[int]:
    """SIGKILL every process in the namespace until none is left (bounded); the pids that
    would not die (in the kernel: uninterruptible) are returned."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids(name)
        if not left:
            return []
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def delete(name: str) -> None:
    """Kill what runs in the namespace, then remove it (its veth ends go with it)."""
    if not exists(name):
        return
    stuck = kill_all(name)
    if stuck:
        raise RuntimeError(f"processes {stuck} in namespace {name} would not die")
    ip("netns", "del", name)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block (this thread only) in the network namespace ``name``."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the test's own namespace")
    finally:
        os.close(own)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns into {what}: {os.strerror(code)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(short_root: Path | None = None) -> list[str]:
    """Remove the namespaces (and the directories under ``short_root``) of beds whose test
    process is gone; the namespaces removed."""
    if short_root is not None:
        for found in short_root.glob(f"{PREFIX}-*"):
            owner = _NAME.match(found.name + "-")
            if owner is not None and not _alive(int(owner.group(1))):
                shutil.rmtree(found, ignore_errors=True)
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError as e:
        if e.errno == errno.ENOENT:
            return []
        raise
    removed = []
    for name in names:
        found = _NAME.match(name)
        if found is None or _alive(int(found.group(1))):
            continue
        with contextlib.suppress(RuntimeError):
            delete(name)
            removed.append(name)
    return removed
