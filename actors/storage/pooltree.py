"""One connected pool's sub-tree, and what its SPM parts need.

::

    /storage/pools/<spUUID>       Supervisor (transient)
    ├── pool                      PoolActor: pool state; writes go to the SPM's writer
    ├── lease                     LeaseActor: the keeper process, the lease board
    ├── mailbox                   MailboxActor: this host's requests to the SPM
    ├── mailmon                   MailMonitor: serves the hosts' requests while this is SPM
    └── <sdUUID> ...              DomainMonitor: one per active domain (started by the pool)

The keeper's configuration is built on the lease actor's link thread (it finds the master
domain's lease areas, which is storage I/O); the mailbox areas are found the same way on the
mailbox threads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pykka

from actors.config import Config
from actors.directory import ActorDirectory, ServiceRef
from actors.storage.board import MonitorBoard
from actors.storage.calls import POOLS, TASKS
from actors.storage.locator import DomainLocator
from actors.storage.mailbox.actors import MailboxActor, MailMonitor, SpmTerm
from actors.storage.mailbox.format import Message
from actors.storage.pool import POOL_CHILD, MonitorSpec, PoolActor
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.lvmdomain import LvmDomain
from actors.storage.spm.board import LeaseBoard, LeaseState
from actors.storage.spm.keeperconf import MAX_IPC_PATH, KeeperConfig
from actors.storage.spm.leaseactor import LeaseActor
from actors.storage.spm.writerclient import WriterClient
from actors.storage.spm.writerconf import WriterConfig
from actors.storage.state import PoolRecord
from actors.storage.tasks import RecoverPool
from actors.supervisor import ChildSpec, RestartPolicy, Supervisor
from messaging.errors import StorageNotSupported, VdsmError

LEASE, MAILBOX, MAILMON = "lease", "mailbox", "mailmon"
SPM_AREAS = ("ids", "leases", "inbox", "outbox")
WRITE_TIMEOUT = 120.0


def keeper_dir(spm_run: Path, sp_uuid: str) -> Path:
    """The keeper's directory (fence file, pid files, its and its writer's sockets):
    ``<run_dir>/spm/<sp8>``, or, when that is too long for a unix socket path (a deep run
    dir), ``/run/vdsm-spm/<hash of the run dir>-<sp8>`` (``$TMPDIR`` for a non-root agent)."""
    preferred = spm_run / sp_uuid[:8]
    if len(str(preferred).encode()) + len("/w4294967295.sock") <= MAX_IPC_PATH:
        return preferred
    base = Path("/run/vdsm-spm") if os.geteuid() == 0 else \
        Path(tempfile.gettempdir()) / f"vdsm-spm-{os.geteuid()}"
    digest = hashlib.sha256(str(spm_run.resolve()).encode()).hexdigest()[:16]
    return base / f"{digest}-{sp_uuid[:8]}"


class PoolTree:
    def __init__(self, *, config: Config, directory: ActorDirectory, locator: DomainLocator,
                 board: MonitorBoard, lease_board: LeaseBoard, monitor_spec: MonitorSpec,
                 policy: RestartPolicy, owner: str, context: Any) -> None:
        self.config = config
        self.directory = directory
        self.locator = locator
        self.board = board
        self.lease_board = lease_board
        self.monitor_spec = monitor_spec
        self.policy = policy
        self.owner = owner
        self.context = context
        run = config.daemon.run_dir
        self.spm_run = run / "spm"
        self.storage_run = run / "storage"

    def writer(self, sp_uuid: str) -> WriterClient:
        return WriterClient(board=self.lease_board, sp_uuid=sp_uuid, context=self.context)

    # --- the master domain's areas (storage I/O: on the caller's thread) -------------------

    def dom_md(self, record: PoolRecord) -> Path:
        """The directory of the master's lease and mailbox areas (an LVM master's are LVs,
        activated here: StorageNotSupported where LVs cannot be activated)."""
        backend = self.locator.open(record.master_sd)
        if isinstance(backend, FileDomain):
            return backend.layout.dom_md
        if isinstance(backend, LvmDomain):
            backend.lvm.activate(backend.vg_name, list(SPM_AREAS))
            return Path("/dev") / backend.vg_name
        raise StorageNotSupported(reason=f"no lease areas on master domain {record.master_sd}")

    def mail_paths(self, record: PoolRecord) -> Callable[[], tuple[Path, Path]]:
        def paths() -> tuple[Path, Path]:
            dom_md = self.dom_md(record)
            return dom_md / "inbox", dom_md / "outbox"

        return paths

    def keeper_config(self, record: PoolRecord) -> Callable[[], KeeperConfig]:
        spm, storage = self.config.spm, self.config.storage

        def make() -> KeeperConfig:
            dom_md = self.dom_md(record)
            journal = ""
            if spm.journal and isinstance(self.locator.open(record.master_sd), FileDomain):
                journal = str(dom_md / "spmjournal")
            writer = WriterConfig(
                sp_uuid=record.sp_uuid, master_sd=record.master_sd, host_id=record.host_id,
                mnt_root=str(self.storage_run / "mnt"), links_dir=str(self.storage_run / "links"),
                file_preallocation=storage.file_preallocation, workers=spm.writer_workers,
                io_timeout=spm.io_timeout, mail_hosts=self.config.mailbox.hosts,
                prepared_dir=str(self.storage_run / "prepared"),
                lock_timeout=storage.call_timeout * 0.8,
                log_level=self.config.daemon.log_level)
            return KeeperConfig(
                sp_uuid=record.sp_uuid, host_id=record.host_id, owner=self.owner,
                ids_path=str(dom_md / "ids"), leases_path=str(dom_md / "leases"),
                run_dir=str(keeper_dir(self.spm_run, record.sp_uuid)), lease=spm.lease_time,
                renew_interval=spm.renew_interval, io_timeout=spm.io_timeout,
                agent_timeout=spm.agent_timeout, parent_pid=os.getpid(),
                kill_grace=spm.kill_grace, max_hosts=spm.max_hosts,
                auto_contend=spm.auto_contend, journal_dir=journal, writer=asdict(writer))

        return make

    # --- the sub-tree ----------------------------------------------------------------------

    def spec(self, record: PoolRecord) -> ChildSpec:
        sp, cfg = record.sp_uuid, self.config
        path = f"{POOLS}/{sp}"
        mailmon: ServiceRef[MailMonitor] = ServiceRef(self.directory, f"{path}/{MAILMON}")
        tasks: ServiceRef[Any] = ServiceRef(self.directory, TASKS)

        def on_spm(event: str, _state: LeaseState) -> None:
            _tell(mailmon, SpmTerm(event == "gained"))
            if event == "gained":
                _tell(tasks, RecoverPool(sp))

        def live() -> int:  # the highest live host id the keeper saw: the slots to read
            hosts = self.lease_board.get(sp).detail.get("liveHosts") or []
            return int(max([record.host_id, *hosts]))

        def serve(host: int, requests: list[Message], keep: list[Message]) -> list[Message]:
            replies = self.writer(sp).call(
                "Writer.serveMail", {"hostID": host,
                                     "requests": [m.to_wire() for m in requests],
                                     "keep": [m.to_wire() for m in keep]},
                timeout=WRITE_TIMEOUT)
            return [Message.from_wire(r) for r in replies]

        children = [
            ChildSpec(POOL_CHILD, lambda ctx: PoolActor.start(
                ctx, record=record, locator=self.locator,
                tasks=ServiceRef(self.directory, TASKS), monitor_spec=self.monitor_spec,
                board=self.board, lease_board=self.lease_board, writer=self.writer(sp),
                reload_interval=cfg.storage.monitor_interval, write_timeout=WRITE_TIMEOUT),
                cls="PoolActor"),
            ChildSpec(LEASE, lambda ctx: LeaseActor.start(
                ctx, sp_uuid=sp, board=self.lease_board, make_config=self.keeper_config(record),
                heartbeat=cfg.spm.heartbeat_interval, context=self.context,
                listeners=[on_spm]), cls="LeaseActor", stop_timeout=60.0),
            ChildSpec(MAILBOX, lambda ctx: MailboxActor.start(
                ctx, host_id=record.host_id, paths=self.mail_paths(record),
                io_timeout=cfg.spm.io_timeout, poll=cfg.mailbox.poll_interval),
                cls="MailboxActor"),
            ChildSpec(MAILMON, lambda ctx: MailMonitor.start(
                ctx, paths=self.mail_paths(record), hosts=cfg.mailbox.hosts,
                io_timeout=cfg.spm.io_timeout, poll=cfg.mailbox.poll_interval, serve=serve,
                active=self.lease_board.get(sp).may_write(), live=live,
                idle_poll=cfg.mailbox.idle_poll_interval), cls="MailMonitor"),
        ]
        return ChildSpec(
            sp, lambda ctx: Supervisor.start(ctx, policy=self.policy, children=children),
            cls="Supervisor", restart="transient", start_timeout=30.0, stop_timeout=90.0)


def _tell(ref: ServiceRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except (pykka.ActorDeadError, VdsmError):
        pass  # gone or restarting: it rebuilds from the board when it starts
