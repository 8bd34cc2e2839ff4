"""The VM subsystem as the daemon sees it (see actors/subsystem.py).

It wires the VM layer together: one :class:`~actors.vm.board.VmBoard`, one
:class:`~actors.vm.hooks.HookRunner`, the stats sampler (``/vms/sampler``, the ``/vms``
supervisor's only fixed child), a :class:`~actors.vm.actor.VmActor` per VM (started by
``VM.create`` and by recovery as ``/vms/<vmID>``, restart kind ``transient``), the verb
handlers (:mod:`actors.vm.api`) and recovery (:mod:`actors.vm.recovery`).

The agent's ``owner`` tag, written into every domain's metadata, is its state directory:
stable across restarts of one agent, distinct between agents sharing a libvirtd.

It also builds the :class:`~actors.vm.paths.PathPolicy` (where files a client names may
be; the agent's own directories are never among them) and the
:class:`~actors.vm.seriallog.SerialLogs`, and runs :meth:`Resync.check` on the clock so
that VMs whose actors are gone (``/vms`` restarted, an actor given up) are recovered.

Jobs (:mod:`actors.jobs`): the store (``<state_dir>/jobs``) and the host's migration slots
are made here and shared by the VM actors (:class:`~actors.vm.migenv.MigrationEnv`) and the
verbs. At start, jobs a restart interrupted are settled: a VM's migrations by its actor
(recovery starts one for every VM of the registry), hibernations and restores here, as
failed (the VM's recovered status says what became of it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pykka

from actors.config import ConfigError
from actors.directory import ServiceRef
from actors.host.libvirtconn import DomainEvent
from actors.jobs.record import FAILED, MIGRATE_IN, MIGRATE_OUT
from actors.jobs.slots import Gates, Slots
from actors.jobs.store import JobStore
from actors.storage.service import StorageSubsystem
from actors.subsystem import Deps
from actors.supervisor import ChildExists, ChildSpec, Supervisor, SupervisorProxy
from actors.vm.actor import Mode, VmActor
from actors.vm.api import VmApi
from actors.vm.board import VmBoard
from actors.vm.extender import DomainHealthChanged
from actors.vm.hooks import HookRunner
from actors.vm.migapi import MigrationApi
from actors.vm.migenv import MigrationEnv
from actors.vm.ops import VmEnv
from actors.vm.params import VmParams
from actors.vm.paths import PathPolicy
from actors.vm.peers import Peers
from actors.vm.recovery import Found, Resync
from actors.vm.registry import VmRegistry
from actors.vm.sampler import VmStatsSampler
from actors.vm.seriallog import SerialLogs
from actors.vm.status import Transition
from messaging.errors import VMError
from messaging.server import Binding

VMS = "/vms"
SAMPLER = "sampler"
START_TIMEOUT = 30.0


class VmSubsystem:
    name = "vms"

    def __init__(self, deps: Deps, *, storage: StorageSubsystem) -> None:
        self.deps = deps
        self.storage = storage
        cfg = deps.config.vm
        state_dir = deps.config.daemon.state_dir
        self.board = VmBoard()
        self.registry = VmRegistry(state_dir / "vms")
        self.logs = SerialLogs(cfg.serial_log_dir, kept=cfg.serial_logs_kept)
        hibernation = Path(cfg.hibernation_dir) if cfg.hibernation_dir else \
            state_dir / "hibernation"
        try:
            self.paths = PathPolicy.build(
                image_dirs=cfg.image_dirs, hibernation_dir=hibernation,
                private=(state_dir, deps.config.daemon.run_dir, cfg.hooks_dir,
                         cfg.serial_log_dir))
        except ValueError as e:
            raise ConfigError(f"[vm] {e}") from None
        self.paths.prepare()  # the log directory is made by the first VM start
        events, mig = deps.runtime.events, deps.config.migration
        curve = deps.config.curve
        self.jobs = JobStore(state_dir / "jobs", events, keep=deps.config.jobs.keep_finished)
        self.interrupted = self.jobs.load()
        self.migration = MigrationEnv(
            jobs=self.jobs,
            outgoing=Slots("outgoing migrations", mig.max_outgoing),
            incoming=Slots("incoming migrations", mig.max_incoming),
            gates=Gates("asking"),
            peers=Peers(deps.config.peers, connect_timeout=mig.connect_timeout,
                        own_secret=Path(curve.server_secret) if curve.enabled else None),
            config=mig,
            publish=events.publish,
        )
        self.env = VmEnv(
            libvirt=deps.libvirt,
            hooks=HookRunner(cfg.hooks_dir, timeout=cfg.hook_timeout),
            storage=storage,
            config=cfg,
            owner=str(state_dir.resolve()),
            logs=self.logs,
            registry=self.registry,
            migration=self.migration,
            agent=deps.config.guest_agent,
            thin=deps.config.thin,
        )
        storage.watch_domains(self._domain_changed)
        #: set once the first recovery pass is done: VM verbs answer 100 until then
        self.ready = threading.Event()
        self.resync = Resync(
            libvirt_handle=deps.libvirt,
            owner=self.env.owner,
            registry=self.registry,
            directory=deps.runtime.directory,
            vms_path=VMS,
            start_vm=self._recover_vm,
            on_done=self._recovered,
            known=self.board.ids,
            interval=cfg.resync_interval,
        )
        self.api = VmApi(directory=deps.runtime.directory, board=self.board,
                         registry=self.registry, paths=self.paths, logs=self.logs,
                         vms_path=VMS, spec=self.vm_spec, ready=self.ready, jobs=self.jobs,
                         guest_agent=deps.config.guest_agent)
        self.migration_api = MigrationApi(vms=self.api, env=self.migration)

    def vm_spec(
        self,
        params: VmParams,
        mode: Mode = "create",
        initial: Transition | None = None,
        started: float | None = None,
        *,
        incoming: str | None = None,
    ) -> ChildSpec:
        env, board = self.env, self.board

        def factory(ctx: Any) -> Any:
            return VmActor.start(ctx, params=params, mode=mode, env=env, board=board,
                                 initial=initial, started=started, incoming=incoming)

        return ChildSpec(params.vm_id, factory, cls="VmActor", restart="transient")

    def _recovered(self) -> None:
        """The first recovery pass started an actor for every VM of the registry: settle
        the interrupted jobs that no actor settles, then open the verbs."""
        known = self.registry.ids()
        for job in self.interrupted:
            current = self.jobs.get(job.job_id)
            if current is None or current.finished:
                continue
            if job.job_type in (MIGRATE_OUT, MIGRATE_IN) and job.vm_id in known:
                continue  # its VM's actor settles it
            self.jobs.update(job.job_id, status=FAILED, code=VMError.code,
                             message="interrupted by a restart of vdsmd (the VM's status "
                                     "says what became of it)")
        self.interrupted = []
        self.ready.set()

    def _recover_vm(self, found: Found) -> None:
        """Start the actor of a running VM found by recovery (on the recovery thread)."""
        spec = self.vm_spec(found.params, "recover", found.state, found.started)
        vms: ServiceRef[Supervisor] = ServiceRef(self.deps.runtime.directory, VMS)
        try:
            vms.proxy(SupervisorProxy).start_child(spec).get(timeout=START_TIMEOUT)
        except ChildExists:
            pass  # started meanwhile (by VM.create or by an earlier pass)

    # --- the Subsystem protocol ------------------------------------------------------------

    def children(self) -> Sequence[ChildSpec]:
        cfg, libvirt, board = self.deps.config.vm, self.deps.libvirt, self.board
        return (
            ChildSpec(
                SAMPLER,
                lambda ctx: VmStatsSampler.start(ctx, libvirt=libvirt, board=board,
                                                 interval=cfg.stats_interval,
                                                 timeout=cfg.stats_timeout),
                cls="VmStatsSampler",
            ),
        )

    def bindings(self) -> dict[str, Binding]:
        return {**self.api.bindings(), **self.migration_api.bindings()}

    def host_stats(self) -> dict[str, Any]:
        count, active = self.board.counts()
        return {"vmCount": count, "vmActive": active}

    def started(self) -> None:
        self.resync.enable()
        self.deps.runtime.clock.call_every(self.deps.config.vm.resync_interval,
                                           self.resync.check)

    def domain_event(self, event: DomainEvent) -> None:
        info = self.deps.runtime.directory.get(f"{VMS}/{event.uuid}")
        if info is not None and info.ref is not None:
            try:
                info.ref.tell(event)
            except pykka.ActorDeadError:
                pass  # it is restarting: it re-attaches and reads the state itself

    def libvirt_connected(self) -> None:
        self.resync.request()

    def _domain_changed(self, sd_uuid: str, valid: bool) -> None:
        """A storage domain turned valid or invalid (on its monitor's thread: only tells):
        a VM paused on an I/O error resumes once its domains are valid again."""
        message = DomainHealthChanged(sd_uuid, valid)
        for vm_id in self.board.ids():
            info = self.deps.runtime.directory.get(f"{VMS}/{vm_id}")
            if info is not None and info.ref is not None:
                try:
                    info.ref.tell(message)
                except pykka.ActorDeadError:
                    pass  # restarting: it re-reads the domains' state when it attaches
