"""The VM subsystem as the daemon sees it (see actors/subsystem.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.directory import RUNNING
from actors.host.libvirtconn import DomainEvent
from actors.storage.service import StorageSubsystem
from actors.subsystem import Deps
from actors.supervisor import ChildSpec
from messaging.server import Binding

VMS = "/vms"


class VmSubsystem:
    name = "vms"

    def __init__(self, deps: Deps, *, storage: StorageSubsystem) -> None:
        self.deps = deps
        self.storage = storage

    def children(self) -> Sequence[ChildSpec]:
        return ()

    def bindings(self) -> dict[str, Binding]:
        return {}

    def host_stats(self) -> dict[str, Any]:
        vms = self.deps.runtime.directory.children(VMS)
        return {"vmCount": len(vms), "vmActive": sum(1 for v in vms if v.state == RUNNING)}

    def started(self) -> None:
        pass

    def domain_event(self, event: DomainEvent) -> None:
        info = self.deps.runtime.directory.get(f"{VMS}/{event.uuid}")
        if info is not None and info.ref is not None:
            info.ref.tell(event)

    def libvirt_connected(self) -> None:
        pass
