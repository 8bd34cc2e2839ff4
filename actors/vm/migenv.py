"""What every migration of this host shares (thread-safe), handed to the VM actors in
:class:`~actors.vm.ops.VmEnv`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.config import MigrationConfig
from actors.jobs.slots import Gates, Slots
from actors.jobs.store import JobStore
from actors.vm.peers import Peers

Publish = Callable[[str, dict[str, Any]], None]


class Live:
    """The migrations running in this process, by job id: an actor restarted by its
    supervisor takes its VM's running migration over instead of starting a second one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Any] = {}

    def add(self, job_id: str, migration: Any) -> None:
        with self._lock:
            self._running[job_id] = migration

    def remove(self, job_id: str, migration: Any) -> None:
        with self._lock:
            if self._running.get(job_id) is migration:
                del self._running[job_id]

    def get(self, job_id: str) -> Any:
        with self._lock:
            return self._running.get(job_id)


@dataclass(frozen=True)
class MigrationEnv:
    jobs: JobStore
    outgoing: Slots  # [migration] max_outgoing
    incoming: Slots  # [migration] max_incoming
    gates: Gates  # per destination: this host's migrations ask it in turn
    peers: Peers
    config: MigrationConfig
    publish: Publish  # the event publisher (|virt|VM_migration_status|<vmID>)
    live: Live = field(default_factory=Live)
