"""The guests' serial console logs: where they are, how large they grow, how long they stay.

A guest's serial console goes to ``<[vm] serial_log_dir>/<vmID>.log``. That directory is
not the state directory: a guest that writes without end can fill it, but never the
filesystem the agent needs for its own state (the VM index, task records, pools).

The size is capped by libvirt's log daemon: with qemu.conf's ``stdio_handler = "logd"``
(libvirt's default), libvirt has virtlogd open a file chardev and hands qemu the descriptor;
virtlogd rotates the file at virtlogd.conf's ``max_size`` (default 2 MiB) and keeps
``max_backups`` older ones (``<vmID>.log.0`` ..., default 3), so one VM's log never holds
more than ``(max_backups + 1) * max_size`` bytes (8 MiB by default), measured here.

A log stays after its VM is destroyed, for post-mortems: of the VMs this agent no longer
knows, only the ``[vm] serial_logs_kept`` most recently written logs are kept (pruned
when a VM is destroyed). A failed ``VM.create`` leaves no empty log behind.

Plain class, blocking file operations: call it off the actor threads.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".log"


class SerialLogs:
    def __init__(self, directory: Path, *, kept: int) -> None:
        self.directory = directory
        self.kept = kept

    def path(self, vm_id: str) -> Path:
        return self.directory / f"{uuid.UUID(vm_id)}{SUFFIX}"  # a UUID: safe in a path

    def prepare(self) -> None:
        """Create the directory (closed to others: guests' consoles may show secrets)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def remove_if_empty(self, vm_id: str) -> None:
        """Remove the VM's current log if nothing was written to it (a failed start)."""
        path = self.path(vm_id)
        try:
            if path.stat().st_size == 0:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the empty log %s: %s", path, e)

    def prune(self, known: Collection[str]) -> list[str]:
        """Remove the logs (with their rotated files) of VMs not in ``known`` beyond the
        ``kept`` most recently written; returns the vmIDs whose logs were removed."""
        groups: dict[str, list[tuple[float, Path]]] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as e:
            log.warning("cannot list %s: %s", self.directory, e)
            return []
        for entry in entries:
            vm_id = _owner(entry.name)
            if vm_id is None or vm_id in known:
                continue
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            groups.setdefault(vm_id, []).append((mtime, Path(entry.path)))
        newest_first = sorted(groups, key=lambda v: max(t for t, _ in groups[v]), reverse=True)
        removed = newest_first[self.kept:]
        for vm_id in removed:
            for _mtime, path in groups[vm_id]:
                try:
                    path.unlink()
                except OSError as e:
                    log.warning("cannot remove the old log %s: %s", path, e)
        if removed:
            log.info("removed the serial logs of %d VMs no longer known", len(removed))
        return removed


def _owner(name: str) -> str | None:
    """The vmID of a log file name (``<vmID>.log`` or a rotated ``<vmID>.log.<n>``)."""
    stem, dot, rest = name.partition(SUFFIX)
    if dot != SUFFIX or (rest and not (rest[0] == "." and rest[1:].isdigit())):
        return None
    try:
        return str(uuid.UUID(stem)) if len(stem) == 36 else None
    except ValueError:
        return None
