"""What every migration of this host shares (thread-safe), handed to the VM actors in
:class:`~actors.vm.ops.VmEnv`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.config import MigrationConfig
from actors.jobs.slots import Gates, Slots
from actors.jobs.store import JobStore
from actors.vm.peers import Peers

Publish = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class MigrationEnv:
    jobs: JobStore
    outgoing: Slots  # [migration] max_outgoing
    incoming: Slots  # [migration] max_incoming
    gates: Gates  # per destination: this host's migrations ask it in turn
    peers: Peers
    config: MigrationConfig
    publish: Publish  # the event publisher (|virt|VM_migration_status|<vmID>)
