"""The storage subsystem as the daemon sees it (see actors/subsystem.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.host.libvirtconn import DomainEvent
from actors.subsystem import Deps
from actors.supervisor import ChildSpec
from messaging.server import Binding


class StorageSubsystem:
    name = "storage"

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def children(self) -> Sequence[ChildSpec]:
        return ()

    def bindings(self) -> dict[str, Binding]:
        return {}

    def host_stats(self) -> dict[str, Any]:
        return {"storageDomains": {}}

    def started(self) -> None:
        pass

    def domain_event(self, event: DomainEvent) -> None:
        pass

    def libvirt_connected(self) -> None:
        pass
