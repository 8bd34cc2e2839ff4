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


def openers(path: Path, *, only: frozenset[str] | None = None,
            proc: Path = PROC) -> list[tuple[int, str]]:
    """``(pid, command name)`` of the processes that have ``path`` open (of those named in
    ``only``, when given), read from ``/proc``: the answer holds across a restart of vdsmd."""
    target = os.path.realpath(path)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if only is not None and comm not in only:
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        for fd in fds:
            try:
                if str(fd.readlink()) == target:
                    found.append((int(entry.name), comm))
                    break
            except OSError:
                continue
    return found


def holders(path: Path, proc: Path = PROC) -> list[int]:
    """Pids of the storage tools (:data:`TOOLS`) that have ``path`` open."""
    return [pid for pid, _comm in openers(path, only=TOOLS, proc=proc)]


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
