"""The index of this agent's VMs: one small file per VM under ``<state_dir>/vms/``.

Recovery needs to know which domains are this agent's. Listing libvirt's domains answers
that, but a listing waits for every domain's lock, and libvirt holds a domain's lock for
the whole of its destroy (~11 s for a stopped qemu, measured here): a restarted agent would
keep every VM verb answering "Recovering" for that long because of somebody else's VM. So
the first recovery pass looks up only the VMs listed here, by UUID (no wait on other
domains); the listing sweep for strays runs afterwards, with the verbs already open.

An entry (``<vmID>.vm.json``, the vmParams as JSON) is written before the domain is created
and removed when the VM is destroyed or its start failed. An entry whose domain is gone
means the VM ended while the agent was not running: recovery reports it ``Down``. The
domain's own metadata stays the source of the params of a running VM.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from actors.vm.params import VmParams
from messaging.errors import NoSpace, StorageError, VdsmError

log = logging.getLogger(__name__)

SUFFIX = ".vm.json"


class VmRegistry:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, vm_id: str) -> Path:
        return self.directory / f"{uuid.UUID(vm_id)}{SUFFIX}"  # a UUID: safe in a path

    def add(self, params: VmParams) -> None:
        """Record the VM (atomically: a crash leaves the old entry or the new one).

        A failed write (a full state filesystem) leaves nothing behind and raises
        ``NoSpace`` (211) or ``StorageError`` (200)."""
        path = self._path(params.vm_id)
        tmp = path.with_name(path.name + ".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tmp.open("w") as f:
                f.write(json.dumps(params.to_dict(), sort_keys=True))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            what = f"cannot record VM {params.vm_id} in {self.directory}"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(where=str(self.directory), reason=what) from None
            raise StorageError(reason=f"{what}: {e.strerror}") from None

    def remove(self, vm_id: str) -> None:
        self._path(vm_id).unlink(missing_ok=True)

    def __contains__(self, vm_id: str) -> bool:
        return self._path(vm_id).exists()

    def ids(self) -> set[str]:
        """The vmIDs recorded (from the file names: nothing is read)."""
        try:
            names = [p.name for p in self.directory.glob(f"*{SUFFIX}")]
        except OSError as e:
            log.error("cannot list %s: %s", self.directory, e)
            return set()
        found = set()
        for name in names:
            try:
                found.add(str(uuid.UUID(name[: -len(SUFFIX)])))
            except ValueError:
                continue
        return found

    def get(self, vm_id: str) -> VmParams | None:
        """The VM's recorded params; None if it is not recorded (or unreadable: logged)."""
        path = self._path(vm_id)
        try:
            return VmParams.from_dict(vm_id, json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, VdsmError) as e:
            log.error("the VM entry %s is unreadable: %s", path, e)
            return None

    def entries(self) -> dict[str, VmParams]:
        """Every recorded VM; unreadable entries are logged and skipped."""
        found: dict[str, VmParams] = {}
        try:
            paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError as e:
            log.error("cannot list %s: %s", self.directory, e)
            return found
        for path in paths:
            vm_id = path.name[: -len(SUFFIX)]
            try:
                vm_id = str(uuid.UUID(vm_id))
                stored: Any = json.loads(path.read_text())
                found[vm_id] = VmParams.from_dict(vm_id, stored)
            except (OSError, ValueError, KeyError, TypeError, AttributeError, VdsmError) as e:
                log.error("skipping the unreadable VM entry %s: %s", path, e)
        return found
