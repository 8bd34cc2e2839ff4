"""The storage subsystem as the daemon sees it (see actors/subsystem.py).

It builds the storage sub-tree under ``/storage``::

    /storage                      Supervisor (one_for_one)
    ├── tasks                     TaskManager: task records, task worker threads
    ├── connections               ConnectionsActor: mounts/links on its worker threads
    ├── domains                   DomainsActor: domain I/O of the verbs, per-domain lanes
    └── pools                     Supervisor: one sub-tree per connected pool
        └── <spUUID>              Supervisor (transient)
            ├── pool              PoolActor: pool state, the single metadata writer
            └── <sdUUID> ...      DomainMonitor: one per active domain of the pool

and hands out the verb handlers (:mod:`actors.storage.api`), the monitors' board for
``Host.getStats`` and, for the VM subsystem, :meth:`StorageSubsystem.prepare_volume` and
:meth:`StorageSubsystem.teardown_volume` (typed: a
:class:`~actors.storage.handle.VolumeHandle` and the VM's id, not wire params).

Paths on the host: connections under ``<run_dir>/storage/mnt``, prepared block volumes
linked under ``<run_dir>/storage/links``, who prepared which volume recorded under
``<run_dir>/storage/prepared`` (:mod:`actors.storage.usage`), persisted state under
``<state_dir>/storage``
(see :mod:`actors.storage.state`). The ``pools`` supervisor starts one sub-tree per pool
remembered in the state directory, so a restarted vdsmd reconnects its pools by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from actors.directory import ServiceRef
from actors.host.libvirtconn import DomainEvent
from actors.storage import taskwork
from actors.storage.api import StorageApi
from actors.storage.board import MonitorBoard
from actors.storage.calls import POOLS, TASKS, ask, wait
from actors.storage.connections import ConnectionsActor
from actors.storage.domains import DomainsActor
from actors.storage.handle import VolumeHandle, vm_holder
from actors.storage.locator import DomainLocator
from actors.storage.monitor import DomainMonitor
from actors.storage.mount import Connector
from actors.storage.pool import POOL_CHILD, PoolActor
from actors.storage.sd.filecreate import FilePreallocation
from actors.storage.state import ConnectionStore, PoolRecord, PoolRecords
from actors.storage.tasks import TaskManager
from actors.storage.taskstore import TaskStore
from actors.storage.usage import VolumeUsage
from actors.subsystem import Deps
from actors.supervisor import ChildSpec, RestartPolicy, Supervisor
from messaging.server import Binding

LOCK_SHARE = 0.8
"""An image's lock is waited for this share of ``call_timeout`` (then 224), so that a verb
waiting behind a stuck deletion answers before its own deadline."""


class StorageSubsystem:
    name = "storage"

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        cfg = deps.config
        self.config = cfg.storage
        run_dir = cfg.daemon.run_dir / "storage"
        self.state_dir = cfg.daemon.state_dir / "storage"
        self.board = MonitorBoard()
        self.locator = DomainLocator(
            mnt_root=run_dir / "mnt", links_dir=run_dir / "links",
            file_preallocation=cast(FilePreallocation, self.config.file_preallocation))
        self.connector = Connector(run_dir / "mnt", timeout=self.config.mount_timeout)
        self.usage = VolumeUsage(run_dir / "prepared",
                                 lock_timeout=self.config.call_timeout * LOCK_SHARE)
        self.records = PoolRecords(self.state_dir / "pools")
        s = cfg.supervision
        self.policy = RestartPolicy(s.max_restarts, s.within, s.backoff_initial, s.backoff_max)
        self.api = StorageApi(directory=deps.runtime.directory, board=self.board,
                              records=self.records, pool_tree=self.pool_tree,
                              call_timeout=self.config.call_timeout,
                              mount_timeout=self.config.mount_timeout)
        self.task_env = taskwork.TaskEnv(locator=self.locator, pool_call=self._pool_call,
                                         usage=self.usage)

    # --- the sub-tree ----------------------------------------------------------------------

    def monitor_spec(self, sd_uuid: str, host_id: int) -> ChildSpec:
        cfg, locator, board = self.config, self.locator, self.board
        return ChildSpec(
            sd_uuid,
            lambda ctx: DomainMonitor.start(ctx, sd_uuid=sd_uuid, host_id=host_id,
                                            interval=cfg.monitor_interval,
                                            timeout=cfg.monitor_timeout, locator=locator,
                                            board=board),
            cls="DomainMonitor",
        )

    def pool_tree(self, record: PoolRecord) -> ChildSpec:
        """The sub-tree of one connected pool: its supervisor with the pool actor."""
        directory, policy = self.deps.runtime.directory, self.policy
        pool = ChildSpec(
            POOL_CHILD,
            lambda ctx: PoolActor.start(ctx, record=record, locator=self.locator,
                                        tasks=ServiceRef(directory, TASKS),
                                        monitor_spec=self.monitor_spec, board=self.board),
            cls="PoolActor",
        )
        return ChildSpec(
            record.sp_uuid,
            lambda ctx: Supervisor.start(ctx, policy=policy, children=[pool]),
            cls="Supervisor", restart="transient", start_timeout=30.0, stop_timeout=60.0,
        )

    def children(self) -> Sequence[ChildSpec]:
        cfg, policy = self.config, self.policy
        return (
            ChildSpec(
                "tasks",
                lambda ctx: TaskManager.start(ctx, store=TaskStore(self.state_dir / "tasks"),
                                              builders=taskwork.builders(self.task_env),
                                              workers=cfg.task_workers),
                cls="TaskManager",
            ),
            ChildSpec(
                "connections",
                lambda ctx: ConnectionsActor.start(
                    ctx, connector=self.connector,
                    store=ConnectionStore(self.state_dir / "connections.json")),
                cls="ConnectionsActor",
            ),
            ChildSpec(
                "domains",
                lambda ctx: DomainsActor.start(ctx, locator=self.locator, usage=self.usage,
                                               workers=cfg.io_workers,
                                               per_domain=cfg.io_per_domain),
                cls="DomainsActor",
            ),
            ChildSpec(
                "pools",
                lambda ctx: Supervisor.start(
                    ctx, policy=policy,
                    children=[self.pool_tree(r) for r in self.records.load()]),
                cls="Supervisor", start_timeout=60.0, stop_timeout=120.0,
            ),
        )

    def _pool_call(self, sp_uuid: str, action: str, sd_uuid: str) -> None:
        """A task step's pool metadata write, done by the pool actor (on a task worker)."""
        path = f"{POOLS}/{sp_uuid}/{POOL_CHILD}"
        pool: ServiceRef[PoolActor] = ServiceRef(self.deps.runtime.directory, path)
        proxy = pool.proxy()
        call = proxy.attach_now(sd_uuid) if action == "attach" else proxy.detach_now(sd_uuid)
        wait(ask(call, path), self.config.call_timeout, f"{action} of {sd_uuid}")

    # --- the Subsystem protocol ------------------------------------------------------------

    def bindings(self) -> dict[str, Binding]:
        return self.api.bindings()

    def host_stats(self) -> dict[str, Any]:
        return {"storageDomains": self.board.snapshot()}

    def started(self) -> None:
        pass

    def domain_event(self, event: DomainEvent) -> None:
        pass

    def libvirt_connected(self) -> None:
        pass

    # --- for the VM subsystem (called on its operation threads: may block, bounded) --------

    def prepare_volume(self, volume: VolumeHandle, vm_id: str, /) -> str:
        """The path VM ``vm_id`` opens for this volume (on block domains a symlink to the
        device; the backing chain resolves from it), recorded as the VM's use so that the
        volume cannot be deleted until :meth:`teardown_volume`. Raises Image.prepare's
        storage errors."""
        return self.api.volumes.prepare_volume(volume, vm_holder(vm_id)).path

    def teardown_volume(self, volume: VolumeHandle, vm_id: str, /) -> None:
        """Undo :meth:`prepare_volume` once VM ``vm_id`` no longer uses the volume."""
        self.api.volumes.teardown_volume(volume, vm_holder(vm_id))
