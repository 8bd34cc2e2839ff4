"""The storage subsystem as the daemon sees it (see actors/subsystem.py).

It builds the storage sub-tree under ``/storage``::

    /storage                      Supervisor (one_for_one)
    ├── tasks                     TaskManager: task records, task worker threads
    ├── connections               ConnectionsActor: mounts/links on its worker threads
    ├── domains                   DomainsActor: domain I/O of the verbs, per-domain lanes
    └── pools                     Supervisor: one sub-tree per connected pool
        └── <spUUID>              Supervisor (transient; see actors/storage/pooltree.py)
            ├── pool              PoolActor: pool state; its writes go to the SPM's writer
            ├── lease             LeaseActor: the keeper process and the lease board
            ├── mailbox           MailboxActor: this host's requests to the SPM
            ├── mailmon           MailMonitor: the hosts' requests, served while SPM
            └── <sdUUID> ...      DomainMonitor: one per active domain of the pool

and hands out the verb handlers (:mod:`actors.storage.api`), the monitors' board for
``Host.getStats`` and, for the VM subsystem, :meth:`StorageSubsystem.prepare_volume`,
:meth:`StorageSubsystem.teardown_volume` and, for thin provisioning,
:meth:`~StorageSubsystem.volume_size`, :meth:`~StorageSubsystem.extend_volume`,
:meth:`~StorageSubsystem.domain_valid` and :meth:`~StorageSubsystem.watch_domains` (typed: a
:class:`~actors.storage.handle.VolumeHandle` and the VM's id, not wire params).

Paths on the host: connections under ``<run_dir>/storage/mnt``, prepared block volumes
linked under ``<run_dir>/storage/links``, who prepared which volume recorded under
``<run_dir>/storage/prepared`` (:mod:`actors.storage.usage`), persisted state under
``<state_dir>/storage``
(see :mod:`actors.storage.state`). The ``pools`` supervisor starts one sub-tree per pool
remembered in the state directory, so a restarted vdsmd reconnects its pools by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pykka
import zmq

from actors.directory import ServiceRef
from actors.host.libvirtconn import DomainEvent
from actors.hostuuid import host_uuid
from actors.storage.api import StorageApi
from actors.storage.board import MonitorBoard
from actors.storage.calls import POOLS, TASKS, ask
from actors.storage.connections import ConnectionsActor
from actors.storage.domains import DomainsActor
from actors.storage.handle import VolumeHandle, vm_holder
from actors.storage.hostids import HostIds
from actors.storage.locator import DomainLocator
from actors.storage.monitor import DomainMonitor
from actors.storage.mount import Connector
from actors.storage.pool import PoolActor, PoolChanged
from actors.storage.pooltree import PoolTree
from actors.storage.proxies import LeaseProxy
from actors.storage.sd.filecreate import FilePreallocation
from actors.storage.sd.records import VolumeSize
from actors.storage.spm.board import LeaseBoard
from actors.storage.spm.leaseactor import LeaseActor
from actors.storage.spm.remotework import SpmStartWork, writer_builders
from actors.storage.spmapi import SPM_START, SpmApi
from actors.storage.state import ConnectionStore, PoolRecord, PoolRecords
from actors.storage.tasks import TaskManager
from actors.storage.taskstore import TaskStore
from actors.storage.taskwork import Builder, Work
from actors.storage.usage import VolumeUsage
from actors.subsystem import Deps
from actors.supervisor import ChildSpec, RestartPolicy, Supervisor
from messaging.errors import VdsmError
from messaging.server import Binding

EXTEND_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 24 * 3600.0
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
        self.lease_board = LeaseBoard()
        self.tree = PoolTree(config=cfg, directory=deps.runtime.directory,
                             locator=self.locator, board=self.board,
                             lease_board=self.lease_board, monitor_spec=self.monitor_spec,
                             policy=self.policy, owner=host_uuid(cfg.daemon.state_dir),
                             context=deps.context or zmq.Context.instance())
        self.api = StorageApi(directory=deps.runtime.directory, board=self.board,
                              records=self.records, pool_tree=self.pool_tree,
                              call_timeout=self.config.call_timeout,
                              mount_timeout=self.config.mount_timeout)
        spm = cfg.spm
        #: whether other hosts renew their host ids (Host.fenceNode's policy asks)
        self.host_ids = HostIds(records=self.records, lease_board=self.lease_board,
                                directory=deps.runtime.directory, spm=spm)
        self.spm_api = SpmApi(
            directory=deps.runtime.directory, call_timeout=self.config.call_timeout,
            board=self.lease_board, tasks=ServiceRef(deps.runtime.directory, TASKS),
            writer=self.tree.writer, extend_timeout=EXTEND_TIMEOUT,
            stop_timeout=spm.io_timeout * 4 + spm.kill_grace * 4 + 5.0,
            events=deps.runtime.events)

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
        """The sub-tree of one connected pool (see :mod:`actors.storage.pooltree`)."""
        return self.tree.spec(record)

    def children(self) -> Sequence[ChildSpec]:
        cfg, policy = self.config, self.policy
        return (
            ChildSpec(
                "tasks",
                lambda ctx: TaskManager.start(ctx, store=TaskStore(self.state_dir / "tasks"),
                                              builders=self._task_builders(),
                                              workers=cfg.task_workers,
                                              spm_recovery=self._recover_journals),
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

    def _task_builders(self) -> dict[str, Builder]:
        """SPM tasks run in the pool's writer; spmStart waits on the lease board."""
        spm = self.deps.config.spm
        acquire = spm.lease_time + 4 * spm.io_timeout + 4 * spm.renew_interval + 30.0

        def spm_start(params: Mapping[str, Any]) -> Work:
            sp_uuid = str(params["spUUID"])
            path = f"{POOLS}/{sp_uuid}/lease"

            def contend() -> None:
                lease: ServiceRef[LeaseActor] = ServiceRef(self.deps.runtime.directory, path)
                ask(lease.proxy(LeaseProxy).spm_start(), path)

            return SpmStartWork(board=self.lease_board, sp_uuid=sp_uuid, contend=contend,
                                timeout=acquire)

        directory = self.deps.runtime.directory

        def pool_changed(sp_uuid: str, record: dict[str, Any]) -> None:
            pool: ServiceRef[PoolActor] = ServiceRef(directory, f"{POOLS}/{sp_uuid}/pool")
            try:
                pool.tell(PoolChanged(record))
            except (pykka.ActorDeadError, VdsmError):
                pass  # restarting: it reads the pool from the master anyway

        return {**writer_builders(self.tree.writer, pool_changed), SPM_START: spm_start}

    def _recover_journals(self, sp_uuid: str) -> list[dict[str, Any]]:
        outcomes: list[dict[str, Any]] = self.tree.writer(sp_uuid).call(
            "Writer.recoverTasks", {}, timeout=RECOVERY_TIMEOUT)
        return outcomes

    # --- the Subsystem protocol ------------------------------------------------------------

    def bindings(self) -> dict[str, Binding]:
        return {**self.api.bindings(), **self.spm_api.bindings()}

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

    def volume_size(self, volume: VolumeHandle, /) -> VolumeSize:
        """The volume's virtual size, its size on this host (devices refreshed first) and
        how far it can be extended (``limit`` None: never: it is not thin)."""
        return self.api.volumes.volume_size(volume)

    def extend_volume(self, volume: VolumeHandle, size: int, /, *, since: float | None = None,
                      timeout: float | None = None) -> int:
        """Have the SPM extend the volume to at least ``size`` bytes (this host's writer when
        it is the SPM, the mailbox otherwise: the request waits there, at most ``timeout``
        here, while no SPM serves), refresh this host's devices and return the size they
        show. Publishes ``|storage|volume_extended|`` with the latency since ``since``. The
        same path as ``StoragePool.extendVolume``."""
        return self.spm_api.extend(volume, size, since=since, timeout=timeout)

    def domain_valid(self, sd_uuid: str, /) -> bool | None:
        """Whether the domain's last check passed (None: not monitored, or not checked yet).
        Reads the monitors' board: never blocks."""
        health = self.board.get(sd_uuid)
        return health.valid if health is not None and health.actual else None

    def watch_domains(self, listener: Callable[[str, bool], None], /) -> None:
        """Call ``listener(sdUUID, valid)`` on every change of a domain's validity (on a
        monitor's thread: only hand it on)."""
        self.board.listen(listener)
