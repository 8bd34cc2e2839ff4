"""Commands a killed vdsmd left behind, still writing a volume it was creating.

Storage commands run in their own session (see command.py), so a SIGKILL of vdsmd does not
reach a ``qemu-img`` that was preallocating a volume: it keeps writing into a file that the
recovery is about to remove. Before undoing such a creation, the recovery kills the storage
tools that still hold the file open (only those: never a VM's qemu or anything else).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

TOOLS = frozenset(("qemu-img", "fallocate", "dd"))
PROC = Path("/proc")


def holders(path: Path, proc: Path = PROC) -> list[int]:
    """Pids of the storage tools (:data:`TOOLS`) that have ``path`` open."""
    target = os.path.realpath(path)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in TOOLS:
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        for fd in fds:
            try:
                if str(fd.readlink()) == target:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def kill_holders(path: Path, *, wait: float = 5.0) -> list[int]:
    """SIGKILL the storage tools writing ``path`` and wait (bounded) until they let go."""
    pids = holders(path)
    for pid in pids:
        log.warning("killing pid %d, left writing %s by an earlier vdsmd", pid, path)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline and holders(path):
        time.sleep(0.05)
    return pids
