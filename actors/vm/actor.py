"""VmActor: one actor per VM, the single owner of that VM's state.

The actor never blocks. A verb arrives as a proxy call (an ``ask`` from an API worker
thread); the actor checks the VM's state, hands the blocking part (hooks and libvirt calls,
:class:`~actors.vm.ops.VmOps`) to its :class:`~actors.vm.guestcall.GuestCaller`, which runs it
on a thread of its own with a deadline, and returns a ``concurrent.futures.Future`` at once.
The API worker waits on that future. When the call ends (or its deadline passes) the
caller's callback ``tell``s the actor an ``OpDone``; the actor updates its status, publishes
it, and only then resolves the future, so a client that sees a verb succeed also sees its
effect in ``VM.getStats``.

The logic is in plain helpers that run on the actor's thread only, created in ``setup``:
:class:`~actors.vm.vmstate.VmState` (the VM's params, status and its publishing, shared by
the others), :class:`~actors.vm.lanes.Lanes` (which operation may start, with what
deadline), :class:`~actors.vm.outcomes.Outcomes` (what an operation's result does to the
state; re-attaching) and :class:`~actors.vm.deadlines.Deadlines` (the actor's timers). The
actor owns them, routes its messages to them and answers the verbs.

At most one operation of each kind runs at a time: ``control`` (pause, cont, reset,
shutdown, reboot, setTicket, media, hibernate, balloon, create), ``destroy`` (its own kind,
so that a VM whose qemu is stuck in a control call can still be destroyed) and ``query``
(re-attaching), and ``read`` for the QoS reads (``VM.getIoTune``; the QoS changes and
the policy's are ``control``). Another verb meanwhile gets ``VMBusy`` (retryable); once a call is
abandoned as stuck, the GuestCaller answers ``GuestCallBusy`` until qemu returns.

Status comes from libvirt's events (:class:`~actors.vm.status.StatusTracker`), overlaid with
what only the actor knows (a start in progress, ``Powering up`` for ``powering_up`` seconds,
a requested shutdown, a save). Every change is written to the
:class:`~actors.vm.board.VmBoard` and published as ``|virt|VM_status|<vmID>``.

The VM's guest agent is a component of the actor
(:class:`~actors.vm.guestagent.GuestAgent`): its calls run on threads of its own, its
messages come through here, its state is part of the VM's view (``guestAgent``).
``VM.shutdown`` and ``VM.reboot`` go through the agent when it may answer and fall back to
ACPI; past their ``delay`` the VM is destroyed (or reset) only if the caller asked (``force``),
else a VM still ``Powering down`` is ``Up`` again.

A VM that goes Down stays (status ``Down`` with its exit reason) until ``VM.destroy``, after
which the API stops the actor (restart kind ``transient``: it is removed). Started by
recovery, or restarted by its supervisor after a crash, the actor re-attaches to its running
domain (``Attach``): state and params from libvirt and the domain's metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import pykka

from actors.base import ActorContext, SupervisedActor, tell_or_drop
from actors.host.libvirtconn import DomainEvent
from actors.vm.board import VmBoard
from actors.vm.deadlines import Deadlines, Timer
from actors.vm.desktop import GuestCommand
from actors.vm.extender import Extender, ThinMessage
from actors.vm.guestagent import AgentMessage, GuestAgent
from actors.vm.inflight import CREATE, InFlight, OpDone
from actors.vm.jobwatch import image_watch, save_statistics
from actors.vm.lanes import CONTROL, DESTROY, Lanes, destroy_timeout
from actors.vm.migcontrol import MigrationControl
from actors.vm.migops import MigrationOps
from actors.vm.migrate import MigrationEnded, MigrationStarted
from actors.vm.migspec import MigrationSpec
from actors.vm.ops import VmEnv, VmOps
from actors.vm.outcomes import Outcomes
from actors.vm.params import MemoryImage, VmParams
from actors.vm.status import PauseCode, Transition, VmStatus
from actors.vm.thinwork import ThinWork
from actors.vm.vmstate import RUNNING, VmState
from messaging.errors import InvalidParams, MigrationNotInProgress, VMError

log = logging.getLogger(__name__)

Mode = Literal["create", "recover", "incoming"]


@dataclass(frozen=True)
class Attach:
    """Re-read the domain's state and params from libvirt (recovery, resync, restart)."""


class VmActor(SupervisedActor):
    def __init__(
        self,
        ctx: ActorContext,
        *,
        params: VmParams,
        mode: Mode,
        env: VmEnv,
        board: VmBoard,
        initial: Transition | None = None,
        started: float | None = None,
        ops: VmOps | None = None,
        incoming: str | None = None,
    ) -> None:
        super().__init__(ctx)
        self.vm_id = params.vm_id
        self._mode = mode
        self._env = env
        self._board = board
        self._initial = initial
        self._state = VmState(params, board=board, events=ctx.runtime.events, started=started,
                              on_change=self._after_change)
        self._ops_impl = ops or MigrationOps(params.vm_id, env)
        self._mig_ops = self._ops_impl if isinstance(self._ops_impl, MigrationOps) else \
            MigrationOps(params.vm_id, env)
        self._incoming_job = incoming  # the job of an arriving migration (mode incoming)
        self._migrations: MigrationControl | None = None
        self._inflight: InFlight | None = None
        self._lane: Lanes | None = None
        self._outcomes: Outcomes | None = None
        self._deadlines: Deadlines | None = None
        self._events = 0
        self._launched = False
        self._agent: GuestAgent | None = None
        self._thin: Extender | None = None  # thin provisioning of its drives

    # --- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        me = self.actor_ref
        clock = self.ctx.runtime.clock
        state, env, cfg = self._state, self._env, self._env.config
        self._inflight = InFlight(self.vm_id, lambda done: _tell(me, done), who=self._who,
                                  clock=clock, libvirt=env.libvirt)
        self._agent = state.agent = GuestAgent(
            self.vm_id, config=env.agent, libvirt=env.libvirt, clock=clock,
            board=self._board, tell=lambda message: _tell(me, message),
            on_change=state.publish, running=lambda: state.status in RUNNING)
        self._agent.begin()
        self._thin = Extender(
            self.vm_id, who=self._who, config=env.thin, clock=clock, board=self._board,
            work=ThinWork(self.vm_id, libvirt_handle=env.libvirt, storage=env.storage),
            tell=lambda message: _tell(me, message), resume=self._auto_resume,
            status=lambda: (state.tracker.status, state.tracker.pause_code),
            domain_valid=env.storage.domain_valid)
        if env.migration is not None:
            self._migrations = MigrationControl(
                self, env=env.migration, libvirt=env.libvirt, ops=self._mig_ops,
                call_timeout=cfg.call_timeout,
                destroy_timeout=destroy_timeout(cfg, self._ops_impl))
        self._lane = Lanes(state, inflight=self._inflight, ops=self._ops_impl, config=cfg,
                           migrations=self._migrations)
        self._outcomes = Outcomes(
            state, lanes=self._lane, ops=self._ops_impl, extender=self._thin,
            migrations=self._migrations, call_timeout=cfg.call_timeout,
            retry=lambda delay: self._timers().schedule("attach", delay))
        self._deadlines = Deadlines(
            state, clock=clock, tell=lambda message: _tell(me, message),
            powering_up=cfg.powering_up, ops=self._ops_impl, lanes=self._lane,
            migrations=self._migrations, outcomes=self._outcomes)
        if self._mode == "incoming" and self.ctx.generation == 1:
            state.awaiting_launch = True  # its domain comes with the migration
            self._migrating().expect(self._incoming_job or "")
            state.tracker.set(VmStatus.MIGRATION_DESTINATION)
            state.publish()
            return
        if self._migrations is not None:
            self._migrations.find_interrupted()
        fresh = self._mode == "create" and self.ctx.generation == 1
        if fresh:
            first = VmStatus.RESTORING_STATE if state.params.restore_state else \
                VmStatus.WAIT_FOR_LAUNCH
            state.awaiting_launch = True
            state.tracker.set(first)
            state.publish()
            return
        known = self._board.get(self.vm_id)
        if known is not None:
            # Restarted after a crash, or started again by recovery after /vms restarted or
            # gave this actor up: continue from the last view; the Attach re-reads the domain.
            state.resume(known)
        elif self._initial is not None:
            initial = self._initial
            if self._migrations is not None:  # a VM that left, or is leaving, this host
                initial = self._migrations.recovered_state(initial)
            state.set(initial)  # found by recovery
        self.actor_ref.tell(Attach())

    def teardown(self) -> None:
        if self._deadlines is not None:
            self._deadlines.close()
        if self._migrations is not None:
            self._migrations.teardown()
        if self._inflight is not None:
            self._inflight.close()
        if self._agent is not None:
            self._agent.close()
        if self._thin is not None:
            self._thin.close()

    @property
    def _who(self) -> str:
        """The VM as log lines name it: id and name."""
        return self._state.who

    def describe(self) -> dict[str, Any]:
        return {
            **self._state.view().to_wire(),
            "mode": self._mode,
            **(self._inflight.describe() if self._inflight else {}),
            **(self._migrations.describe() if self._migrations else {}),
            "timers": self._deadlines.names() if self._deadlines else [],
            "domainEvents": self._events,
            "guestAgent": self._guest().describe(),
            "thin": self._thin.describe() if self._thin is not None else {},
        }

    # --- verbs (asked through a proxy by the API workers) ----------------------------------

    def launch(self, job_id: str | None = None) -> Future[dict[str, Any]]:
        """Create (or restore) the domain: the verb part of VM.create; ``job_id``: the
        restore's job, whose progress in bytes is sampled while libvirt restores."""
        if self._mode != "create" or self.ctx.generation != 1 or self._launched:
            raise VMError(reason=f"VM {self.vm_id} is already started")
        self._launched = True
        ops, params = self._ops_impl, self._state.params
        hooks = ("before_vm_dehibernate", "after_vm_dehibernate") if params.restore_state \
            else ("before_vm_start", "after_vm_start")
        timeout = self._env.config.start_timeout + ops.hook_budget(*hooks)
        watch = image_watch(self._env.migration, self.vm_id, job_id, reading=True)
        settle = self._settle()
        return self._lanes().submit(CREATE, CONTROL, timeout=timeout, on_ok=settle.started,
                                    on_error=settle.start_failed,
                                    work=lambda cancelled: ops.start(params, cancelled, watch))

    def destroy(self) -> Future[bool]:
        self._running().check_idle(DESTROY)
        params = self._state.params
        end_job = self._migrations.destroyed() if self._migrations else _nothing

        def work(_cancelled: Any) -> None:
            try:
                self._ops_impl.destroy(params)
            finally:
                end_job()

        lanes = self._lanes()
        return lanes.submit("VM.destroy", DESTROY, timeout=lanes.destroy_timeout(),
                            on_ok=self._settle().destroyed, work=work)

    def pause(self) -> Future[bool]:
        return self._control("VM.pause", ("before_vm_pause", "after_vm_pause"),
                             self._ops_impl.pause, self._settle().read)

    def cont(self) -> Future[bool]:
        return self._control("VM.cont", ("before_vm_cont", "after_vm_cont"),
                             self._ops_impl.cont, self._settle().read)

    def reset(self) -> Future[bool]:
        return self._control("VM.reset", (), lambda _p: self._ops_impl.reset(), _true)

    def shutdown(self, delay: int, message: str, reboot: bool = False,
                 force: bool = False) -> Future[bool]:
        """Power the guest off (or reboot it): through its agent when it may answer, else
        (or when the agent fails) with the ACPI power button. After ``delay`` s a VM that
        did not power off (or reboot) is destroyed (or reset) if ``force``."""
        agent = self._guest()
        through_agent = agent.shutdown if agent.usable else None
        reboots = self._state.reboots

        def on_ok(_method: str) -> bool:
            if reboot:
                self._timers().schedule("reboot-deadline", float(delay), force=force,
                                        reboots=reboots)
            elif self._state.status != VmStatus.DOWN:  # not powered off already
                self._state.set(Transition(VmStatus.POWERING_DOWN))
                self._timers().schedule("shutdown-deadline", float(delay), force=force)
            return True

        extra = agent.shutdown.timeout if through_agent is not None else 0.0
        return self._control(
            "VM.reboot" if reboot else "VM.shutdown", ("before_vm_shutdown",),
            lambda p: self._ops_impl.shutdown(p, message, reboot=reboot, agent=through_agent),
            on_ok, timeout=self._env.config.call_timeout + extra)

    def set_balloon_target(self, target: int) -> Future[bool]:
        """Set the balloon: the memory (KiB) the guest may use, up to ``memSize``."""
        most = self._state.params.mem_mib * 1024
        if target > most:
            raise InvalidParams("target", f"{target} KiB is more than the VM's memory "
                                          f"({most} KiB)")

        def on_ok(_result: Any) -> bool:
            self._board.set_part(self.vm_id, "balloon",
                                 {"balloonInfo": {"balloon_target": target}})
            return True

        return self._control("VM.setBalloonTarget", (),
                             lambda _p: self._ops_impl.set_balloon_target(target), on_ok)

    def tune(self, name: str, call: Callable[[VmOps], Any], *, read: bool = False
             ) -> Future[Any]:
        """A QoS operation (:mod:`actors.vm.qos`): ``call(ops)`` on the control lane or, to
        ``read``, on a lane of its own (a read never waits for a control operation)."""
        if not read:
            return self._control(name, (), lambda _p: call(self._ops_impl), _same)
        return self._lanes().read(name, call)

    # --- guest agent verbs ---------------------------------------------------------------------

    def run_in_guest(self, command: GuestCommand) -> Future[bool]:
        """A desktop verb's command, run in the guest by its agent."""
        return self._guest().run(command)

    def freeze(self, thaw_after: float) -> Future[bool]:
        return self._guest().freeze(thaw_after)

    def thaw(self) -> Future[bool]:
        return self._guest().thaw()

    def set_ticket(self, password: str, ttl: int) -> Future[bool]:
        return self._control("VM.setTicket", ("before_vm_set_ticket", "after_vm_set_ticket"),
                             lambda p: self._ops_impl.set_ticket(p, password, ttl), _true)

    def change_media(self, device: Literal["cdrom", "floppy"], path: str) -> Future[bool]:
        def on_ok(changed: VmParams) -> bool:
            self._state.params = changed
            return True

        started = self._state.started
        return self._control(
            "VM.changeCD" if device == "cdrom" else "VM.changeFloppy", (),
            lambda p: self._ops_impl.change_media(p, device, path, started), on_ok,
        )

    def hibernate(self, path: MemoryImage, job_id: str | None = None) -> Future[bool]:
        """Save the VM's state to ``path``; ``job_id``: the job whose progress the save's
        statistics report."""
        before = self._state.status
        settle = self._settle()
        env, vm_id, ops = self._env, self.vm_id, self._ops_impl
        watch = image_watch(env.migration, vm_id, job_id, reading=False)

        def save(params: VmParams) -> None:
            with save_statistics(env.libvirt, env.migration, vm_id, job_id):
                ops.hibernate(params, path, watch)

        reply = self._control(
            "VM.hibernate", ("before_vm_hibernate", "after_vm_hibernate"), save,
            settle.saved,
            timeout=self._env.config.save_timeout,
            on_error=lambda _e: settle.save_failed(before),
        )
        self._state.set(Transition(VmStatus.SAVING_STATE))
        return reply

    # --- migrations (see actors/vm/migcontrol.py) -----------------------------------------

    def migrate(self, spec: MigrationSpec) -> bool:
        """Start an outgoing migration (its job is recorded): True once it runs."""
        self._running().check_idle(CONTROL, DESTROY)
        self._migrating().start(spec)
        return True

    def migrate_cancel(self) -> Future[Any]:
        return self._migrating().cancel()

    def migrate_change(self, bandwidth: int | None, downtime: int | None) -> Future[Any]:
        return self._migrating().change(bandwidth, downtime)

    def prepare_incoming(self, xml: str, *, started: float | None, timeout: float,
                         prepare_timeout: float) -> Future[Any]:
        """The verb part of VM.migrationCreate (an actor started in mode ``incoming``)."""
        if self._mode != "incoming" or self.ctx.generation != 1 or self._launched:
            raise VMError(reason=f"VM {self.vm_id} is not an arriving migration")
        self._launched = True
        return self._migrating().prepare(xml, started=started, timeout=timeout,
                                         prepare_timeout=prepare_timeout)

    def _migrating(self) -> MigrationControl:
        if self._migrations is None:
            raise MigrationNotInProgress(vmID=self.vm_id)
        return self._migrations

    # what MigrationControl needs of the actor (its MigrationHost protocol)

    def current_status(self) -> VmStatus:
        return self._state.status

    def current_params(self) -> VmParams:
        return self._state.params

    def current_started(self) -> float | None:
        return self._state.started

    def set_status(self, transition: Transition, *, read: bool = False) -> None:
        """``read``: a state an operation read from libvirt (older than events meanwhile)."""
        if read:
            self._state.set_read(transition)
        else:
            self._state.set(transition)

    def submit(self, name: str, kind: str, *, timeout: float, on_ok: Callable[[Any], Any],
               on_error: Callable[[BaseException], None] | None = None,
               work: Callable[[Any], Any]) -> Future[Any]:
        return self._lanes().submit(name, kind, timeout=timeout, on_ok=on_ok,
                                    on_error=on_error, work=work)

    def schedule_incoming(self, delay: float) -> None:
        self._timers().schedule("incoming", delay)

    def reattach(self) -> None:
        self._settle().attach()

    def forget_self(self) -> None:
        """A VM that is not this host's any more (a migration that did not arrive)."""
        self._board.remove(self.vm_id)
        self.stop()

    def tell_self(self, message: Any) -> None:
        _tell(self.actor_ref, message)

    # --- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, DomainEvent):
            self._on_domain_event(message)
        elif isinstance(message, MigrationStarted):
            self._migrating().on_started()
        elif isinstance(message, MigrationEnded):
            self._migrating().on_ended(message)
        elif isinstance(message, OpDone):
            self._running().finish(message, self._state.before_outcome)
        elif isinstance(message, Attach):
            self._settle().attach()
        elif isinstance(message, Timer):
            self._timers().fired(message)
        elif isinstance(message, AgentMessage):
            self._guest().receive(message)
        elif isinstance(message, ThinMessage):
            self._extender().receive(message)
        else:
            return super().on_receive(message)
        return None

    def _on_domain_event(self, event: DomainEvent) -> None:
        self._events += 1
        if event.kind == "lifecycle":
            self._state.changes_seen += 1
            kind, detail = event.args
            if self._state.tracker.on_event(kind, detail):
                self._after_change()
        elif event.kind == "io_error":
            _src, _alias, action, reason = event.args
            self._state.tracker.on_io_error(action, reason)
            self._extender().on_io_error(event)
        elif event.kind == "block_threshold":
            self._extender().on_threshold(event)
        elif event.kind == "agent_lifecycle":
            state, reason = event.args
            self._guest().on_lifecycle(state, reason)
        elif event.kind == "reboot":
            self._state.reboots += 1
            log.info("VM %s rebooted", self.vm_id)
        else:
            log.debug("VM %s: %s event %r", self._who, event.kind, event.args)

    # --- helpers (created in setup) ----------------------------------------------------------

    def _control(
        self,
        name: str,
        hooks: tuple[str, ...],
        call: Callable[[VmParams], Any],
        on_ok: Callable[[Any], Any],
        *,
        timeout: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Future[Any]:
        return self._lanes().control(name, hooks, call, on_ok, timeout=timeout,
                                     on_error=on_error)

    def _running(self) -> InFlight:
        assert self._inflight is not None, "used before setup"
        return self._inflight

    def _lanes(self) -> Lanes:
        assert self._lane is not None, "used before setup"
        return self._lane

    def _settle(self) -> Outcomes:
        assert self._outcomes is not None, "used before setup"
        return self._outcomes

    def _timers(self) -> Deadlines:
        assert self._deadlines is not None, "used before setup"
        return self._deadlines

    def _guest(self) -> GuestAgent:
        assert self._agent is not None, "used before setup"
        return self._agent

    def _extender(self) -> Extender:
        assert self._thin is not None, "used before setup"
        return self._thin

    def _auto_resume(self, why: str) -> bool:
        """Resume a VM paused on an I/O error (its extender decided it may run again);
        whether the resume started (not while another operation runs)."""
        tracker = self._state.tracker
        if tracker.status != VmStatus.PAUSED or \
                tracker.pause_code not in (PauseCode.ENOSPC, PauseCode.EIO):
            return False
        try:
            self._control("auto-resume", ("before_vm_cont", "after_vm_cont"),
                          self._ops_impl.cont, self._settle().read)
        except VMError as e:
            log.info("VM %s: cannot resume it yet (%s)", self._who, e)
            return False
        log.info("VM %s: resuming it: %s", self._who, why)
        return True

    # --- status ------------------------------------------------------------------------------

    def _after_change(self) -> None:
        status = self._state.status
        self._timers().on_status(status)
        if status == VmStatus.DOWN and self._agent is not None:
            self._agent.on_down()
        self._state.publish()
        if self._mode == "incoming" and status != VmStatus.MIGRATION_DESTINATION:
            self._state.awaiting_launch = False  # the guest arrived (or was lost): attach may run
        if self._migrations is not None:
            self._migrations.on_status(status)
        if self._thin is not None:
            self._thin.on_status()


def _true(_result: Any) -> bool:
    return True


def _nothing() -> None:
    return None


def _same(result: Any) -> Any:
    return result


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    tell_or_drop(ref, message, log, "the VM actor")
