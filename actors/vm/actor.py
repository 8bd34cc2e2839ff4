"""VmActor: one actor per VM, the single owner of that VM's state.

The actor never blocks. A verb arrives as a proxy call (an ``ask`` from an API worker
thread); the actor checks the VM's state, hands the blocking part (hooks and libvirt calls,
:class:`~actors.vm.ops.VmOps`) to its :class:`~actors.vm.guestcall.GuestCaller`, which runs it
on a thread of its own with a deadline, and returns a ``concurrent.futures.Future`` at once.
The API worker waits on that future. When the call ends (or its deadline passes) the
caller's callback ``tell``s the actor an ``_OpDone``; the actor updates its status, publishes
it, and only then resolves the future, so a client that sees a verb succeed also sees its
effect in ``VM.getStats``.

At most one operation of each kind runs at a time: ``control`` (pause, cont, reset,
shutdown, reboot, setTicket, media, hibernate, balloon, create), ``destroy`` (its own kind,
so that a VM whose qemu is stuck in a control call can still be destroyed) and ``query``
(re-attaching), and ``read`` for the QoS reads (``VM.getIoTune``; the QoS changes and
the policy's are ``control``). Another verb meanwhile gets ``VMBusy`` (retryable); once a call is
abandoned as stuck, the GuestCaller answers ``GuestCallBusy`` until qemu returns.

Status comes from libvirt's events (:class:`~actors.vm.status.StatusTracker`), overlaid with
what only the actor knows (a start in progress, ``Powering up`` for ``powering_up`` seconds,
a requested shutdown, a save). Every change is written to the :class:`VmBoard` and published
as ``|virt|VM_status|<vmID>``.

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
from actors.clock import NamedTimers
from actors.host.libvirtconn import DomainEvent
from actors.vm.board import VmBoard, VmView
from actors.vm.desktop import GuestCommand
from actors.vm.extender import Extender, ThinMessage
from actors.vm.guestagent import AgentMessage, GuestAgent
from actors.vm.inflight import CREATE, InFlight, Op, OpDone
from actors.vm.jobwatch import image_watch, save_statistics
from actors.vm.migcontrol import MigrationControl
from actors.vm.migops import MigrationOps
from actors.vm.migrate import MigrationEnded, MigrationStarted
from actors.vm.migspec import MigrationSpec
from actors.vm.ops import Attached, Started, VmEnv, VmOps
from actors.vm.params import MemoryImage, VmParams
from actors.vm.status import ExitReason, PauseCode, StatusTracker, Transition, VmStatus
from actors.vm.thinwork import ThinWork
from messaging.errors import InvalidParams, LibvirtUnavailable, MigrationNotInProgress, VMError

log = logging.getLogger(__name__)

Mode = Literal["create", "recover", "incoming"]
CONTROL, DESTROY, QUERY, READ = "control", "destroy", "query", "read"
ATTACH_RETRY_MAX = 60.0
RUNNING = frozenset({VmStatus.UP, VmStatus.POWERING_UP, VmStatus.POWERING_DOWN})
# Statuses of an operation the actor began, which a read of a running domain cannot show.
# (Not Up at the end of Powering up: a pause in flight then must still set Paused.)
OWN_STATUSES = frozenset({VmStatus.SAVING_STATE, VmStatus.MIGRATION_SOURCE,
                          VmStatus.POWERING_DOWN})
TimerKind = Literal["powered-up", "shutdown-deadline", "reboot-deadline", "attach", "incoming"]


@dataclass(frozen=True)
class Attach:
    """Re-read the domain's state and params from libvirt (recovery, resync, restart)."""


@dataclass(frozen=True, eq=False)
class _Timer:
    """A timer of the actor fired (:class:`NamedTimers` tells it from a stale one)."""

    what: TimerKind
    force: bool = False
    reboots: int = 0  # reboot events seen when a reboot was asked for


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
        self._params = params
        self._mode = mode
        self._env = env
        self._board = board
        self._initial = initial
        self._started = started
        self._display: tuple[dict[str, Any], ...] = ()
        self._ops_impl = ops or MigrationOps(params.vm_id, env)
        self._mig_ops = self._ops_impl if isinstance(self._ops_impl, MigrationOps) else \
            MigrationOps(params.vm_id, env)
        self._incoming_job = incoming  # the job of an arriving migration (mode incoming)
        self._migrations: MigrationControl | None = None
        self._inflight: InFlight | None = None
        self._tracker = StatusTracker()
        self._published: tuple[Any, ...] | None = None
        me = self.actor_ref
        self._timers: NamedTimers[_Timer] = NamedTimers(ctx.runtime.clock,
                                                      lambda message: _tell(me, message))
        self._attach_delay = 1.0
        self._events = 0
        # libvirt's lifecycle events, and the statuses of an operation the actor began
        # (OWN_STATUSES): a state an operation read from libvirt before one of them is stale.
        self._changes_seen = 0
        self._stale = False  # did such a change come while the finishing op ran?
        self._launched = False
        self._awaiting_launch = False  # created, but its domain not started yet
        self._agent: GuestAgent | None = None
        self._thin: Extender | None = None  # thin provisioning of its drives
        self._reboots = 0  # libvirt reboot events seen
        self._balloon_target: int | None = None  # KiB, once VM.setBalloonTarget set one

    # --- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        me = self.actor_ref
        clock = self.ctx.runtime.clock
        self._inflight = InFlight(self.vm_id, lambda done: _tell(me, done), who=self._who,
                                  clock=clock, libvirt=self._env.libvirt)
        self._agent = GuestAgent(
            self.vm_id, config=self._env.agent, libvirt=self._env.libvirt, clock=clock,
            board=self._board, tell=lambda message: _tell(me, message),
            on_change=self._publish, running=lambda: self._tracker.status in RUNNING)
        self._agent.begin()
        env = self._env
        self._thin = Extender(
            self.vm_id, who=self._who, config=env.thin, clock=clock, board=self._board,
            work=ThinWork(self.vm_id, libvirt_handle=env.libvirt, storage=env.storage),
            tell=lambda message: _tell(me, message), resume=self._auto_resume,
            status=lambda: (self._tracker.status, self._tracker.pause_code),
            domain_valid=env.storage.domain_valid)
        if self._env.migration is not None:
            cfg = self._env.config
            self._migrations = MigrationControl(
                self, env=self._env.migration, libvirt=self._env.libvirt, ops=self._mig_ops,
                call_timeout=cfg.call_timeout, destroy_timeout=self._destroy_timeout())
        if self._mode == "incoming" and self.ctx.generation == 1:
            self._awaiting_launch = True  # its domain comes with the migration
            self._migrating().expect(self._incoming_job or "")
            self._tracker.set(VmStatus.MIGRATION_DESTINATION)
            self._publish()
            return
        if self._migrations is not None:
            self._migrations.find_interrupted()
        fresh = self._mode == "create" and self.ctx.generation == 1
        if fresh:
            first = VmStatus.RESTORING_STATE if self._params.restore_state else \
                VmStatus.WAIT_FOR_LAUNCH
            self._awaiting_launch = True
            self._tracker.set(first)
            self._publish()
            return
        known = self._board.get(self.vm_id)
        if known is not None:
            # Restarted after a crash, or started again by recovery after /vms restarted or
            # gave this actor up: continue from the last view (no spurious status change;
            # a Down VM keeps its exit reason); the Attach re-reads the domain.
            self._tracker.set(known.status, pause_code=known.pause_code,
                              exit_reason=known.exit_reason)
            self._started = self._started or known.started
            self._display = known.display
            self._published = self._key()
        elif self._initial is not None:
            initial = self._initial
            if self._migrations is not None:  # a VM that left, or is leaving, this host
                initial = self._migrations.recovered_state(initial)
            self._set(initial)  # found by recovery
        self.actor_ref.tell(Attach())

    def teardown(self) -> None:
        self._timers.cancel_all()
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
        return f"{self.vm_id} ({self._params.name})"

    def describe(self) -> dict[str, Any]:
        return {
            **self._view().to_wire(),
            "mode": self._mode,
            **(self._inflight.describe() if self._inflight else {}),
            **(self._migrations.describe() if self._migrations else {}),
            "timers": self._timers.names(),
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
        ops, params = self._ops_impl, self._params
        hooks = ("before_vm_dehibernate", "after_vm_dehibernate") if params.restore_state \
            else ("before_vm_start", "after_vm_start")
        timeout = self._env.config.start_timeout + ops.hook_budget(*hooks)
        watch = image_watch(self._env.migration, self.vm_id, job_id, reading=True)
        return self._submit(CREATE, CONTROL, timeout=timeout, on_ok=self._on_started,
                            on_error=self._on_start_failed,
                            work=lambda cancelled: ops.start(params, cancelled, watch))

    def destroy(self) -> Future[bool]:
        self._running().check_idle(DESTROY)
        params = self._params
        end_job = self._migrations.destroyed() if self._migrations else _nothing

        def work(_cancelled: Any) -> None:
            try:
                self._ops_impl.destroy(params)
            finally:
                end_job()

        return self._submit("VM.destroy", DESTROY, timeout=self._destroy_timeout(),
                            on_ok=self._on_destroyed, work=work)

    def pause(self) -> Future[bool]:
        return self._control("VM.pause", ("before_vm_pause", "after_vm_pause"),
                             self._ops_impl.pause, self._on_state)

    def cont(self) -> Future[bool]:
        return self._control("VM.cont", ("before_vm_cont", "after_vm_cont"),
                             self._ops_impl.cont, self._on_state)

    def reset(self) -> Future[bool]:
        return self._control("VM.reset", (), lambda _p: self._ops_impl.reset(), _true)

    def shutdown(self, delay: int, message: str, reboot: bool = False,
                 force: bool = False) -> Future[bool]:
        """Power the guest off (or reboot it): through its agent when it may answer, else
        (or when the agent fails) with the ACPI power button. After ``delay`` s a VM that
        did not power off (or reboot) is destroyed (or reset) if ``force``."""
        agent = self._guest()
        through_agent = agent.shutdown if agent.usable else None
        reboots = self._reboots

        def on_ok(_method: str) -> bool:
            if reboot:
                self._schedule("reboot-deadline", float(delay), force=force, reboots=reboots)
            elif self._tracker.status != VmStatus.DOWN:  # not powered off already
                self._set(Transition(VmStatus.POWERING_DOWN))
                self._schedule("shutdown-deadline", float(delay), force=force)
            return True

        extra = agent.shutdown.timeout if through_agent is not None else 0.0
        return self._control(
            "VM.reboot" if reboot else "VM.shutdown", ("before_vm_shutdown",),
            lambda p: self._ops_impl.shutdown(p, message, reboot=reboot, agent=through_agent),
            on_ok, timeout=self._env.config.call_timeout + extra)

    def set_balloon_target(self, target: int) -> Future[bool]:
        """Set the balloon: the memory (KiB) the guest may use, up to ``memSize``."""
        most = self._params.mem_mib * 1024
        if target > most:
            raise InvalidParams("target", f"{target} KiB is more than the VM's memory "
                                          f"({most} KiB)")

        def on_ok(_result: Any) -> bool:
            self._balloon_target = target
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
        if self._tracker.status == VmStatus.DOWN:
            raise VMError(reason=f"VM {self.vm_id} is Down")
        self._running().check_idle(READ)
        ops = self._ops_impl
        return self._submit(name, READ, timeout=self._env.config.call_timeout, on_ok=_same,
                            work=lambda _c: call(ops))

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
            self._params = changed
            return True

        started = self._started
        return self._control(
            "VM.changeCD" if device == "cdrom" else "VM.changeFloppy", (),
            lambda p: self._ops_impl.change_media(p, device, path, started), on_ok,
        )

    def hibernate(self, path: MemoryImage, job_id: str | None = None) -> Future[bool]:
        """Save the VM's state to ``path``; ``job_id``: the job whose progress the save's
        statistics report."""
        before = self._tracker.status
        env, vm_id, ops = self._env, self.vm_id, self._ops_impl
        watch = image_watch(env.migration, vm_id, job_id, reading=False)

        def save(params: VmParams) -> None:
            with save_statistics(env.libvirt, env.migration, vm_id, job_id):
                ops.hibernate(params, path, watch)

        reply = self._control(
            "VM.hibernate", ("before_vm_hibernate", "after_vm_hibernate"), save,
            self._on_saved,
            timeout=self._env.config.save_timeout,
            on_error=lambda _e: self._on_save_failed(before),
        )
        self._set(Transition(VmStatus.SAVING_STATE))
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
        return self._tracker.status

    def current_params(self) -> VmParams:
        return self._params

    def current_started(self) -> float | None:
        return self._started

    def set_status(self, transition: Transition, *, read: bool = False) -> None:
        """``read``: a state an operation read from libvirt (older than events meanwhile)."""
        if read:
            self._set_read(transition)
        else:
            self._set(transition)

    def submit(self, name: str, kind: str, *, timeout: float, on_ok: Callable[[Any], Any],
               on_error: Callable[[BaseException], None] | None = None,
               work: Callable[[Any], Any]) -> Future[Any]:
        return self._submit(name, kind, timeout=timeout, on_ok=on_ok, on_error=on_error,
                            work=work)

    def schedule_incoming(self, delay: float) -> None:
        self._schedule("incoming", delay)

    def reattach(self) -> None:
        self._attach()

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
            self._running().finish(message, self._before_outcome)
        elif isinstance(message, Attach):
            self._attach()
        elif isinstance(message, _Timer):
            self._on_timer(message)
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
            self._changes_seen += 1
            kind, detail = event.args
            if self._tracker.on_event(kind, detail):
                self._after_change()
        elif event.kind == "io_error":
            _src, _alias, action, reason = event.args
            self._tracker.on_io_error(action, reason)
            self._extender().on_io_error(event)
        elif event.kind == "block_threshold":
            self._extender().on_threshold(event)
        elif event.kind == "agent_lifecycle":
            state, reason = event.args
            self._guest().on_lifecycle(state, reason)
        elif event.kind == "reboot":
            self._reboots += 1
            log.info("VM %s rebooted", self.vm_id)
        else:
            log.debug("VM %s: %s event %r", self._who, event.kind, event.args)

    def _before_outcome(self, op: Op) -> None:
        # A state the operation read is older than lifecycle events that came meanwhile.
        self._stale = op.events_at_start != self._changes_seen

    def _on_timer(self, timer: _Timer) -> None:
        if not self._timers.fired(timer.what, timer):
            return  # cancelled or replaced
        if timer.what == "powered-up" and self._tracker.status == VmStatus.POWERING_UP:
            self._set(Transition(VmStatus.UP))
        elif timer.what == "shutdown-deadline" and self._tracker.status != VmStatus.DOWN:
            if not timer.force:
                log.warning("VM %s did not power off in time (not forced): it stays up",
                            self._who)
                if self._tracker.status == VmStatus.POWERING_DOWN:
                    self._set(Transition(VmStatus.UP))
                return
            log.warning("VM %s did not power off in time: destroying it", self._who)
            if not self._running().running(DESTROY):
                params = self._params
                self._submit("shutdown deadline", DESTROY, timeout=self._destroy_timeout(),
                             on_ok=self._on_forced_off,
                             work=lambda _c: self._ops_impl.destroy(params))
        elif timer.what == "reboot-deadline" and self._reboots == timer.reboots:
            if self._tracker.status not in RUNNING:
                return
            if not timer.force:
                log.warning("VM %s did not reboot in time (not forced)", self.vm_id)
                return
            log.warning("VM %s did not reboot in time: resetting it", self.vm_id)
            try:
                self._control("reboot deadline", (), lambda _p: self._ops_impl.reset(), _true)
            except VMError as e:
                log.warning("VM %s: cannot reset it now: %s", self.vm_id, e)
        elif timer.what == "attach":
            self._attach()
        elif timer.what == "incoming" and self._migrations is not None:
            self._migrations.on_deadline()

    # --- operation plumbing ----------------------------------------------------------------

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
        if self._tracker.status == VmStatus.DOWN:
            raise VMError(reason=f"VM {self.vm_id} is Down")
        self._running().check_idle(CONTROL, DESTROY)
        if self._migrations is not None:
            self._migrations.busy()
        base = self._env.config.call_timeout if timeout is None else timeout
        params = self._params
        return self._submit(name, CONTROL, timeout=base + self._ops_impl.hook_budget(*hooks),
                            on_ok=on_ok, on_error=on_error, work=lambda _c: call(params))

    def _submit(
        self,
        name: str,
        kind: str,
        *,
        timeout: float,
        on_ok: Callable[[Any], Any],
        on_error: Callable[[BaseException], None] | None = None,
        work: Callable[[Any], Any],
    ) -> Future[Any]:
        return self._running().submit(name, kind, timeout=timeout, work=work, on_ok=on_ok,
                                      on_error=on_error,
                                      events_at_start=self._changes_seen)

    def _running(self) -> InFlight:
        assert self._inflight is not None, "used before setup"
        return self._inflight

    def _guest(self) -> GuestAgent:
        assert self._agent is not None, "used before setup"
        return self._agent

    def _extender(self) -> Extender:
        assert self._thin is not None, "used before setup"
        return self._thin

    def _auto_resume(self, why: str) -> bool:
        """Resume a VM paused on an I/O error (its extender decided it may run again);
        whether the resume started (not while another operation runs)."""
        if self._tracker.status != VmStatus.PAUSED or \
                self._tracker.pause_code not in (PauseCode.ENOSPC, PauseCode.EIO):
            return False
        try:
            self._control("auto-resume", ("before_vm_cont", "after_vm_cont"),
                          self._ops_impl.cont, self._on_state)
        except VMError as e:
            log.info("VM %s: cannot resume it yet (%s)", self._who, e)
            return False
        log.info("VM %s: resuming it: %s", self._who, why)
        return True

    def _destroy_timeout(self) -> float:
        return self._env.config.destroy_timeout + self._ops_impl.hook_budget(
            "before_vm_destroy", "after_vm_destroy")

    # --- outcomes ----------------------------------------------------------------------------

    def _on_started(self, started: Started) -> dict[str, Any]:
        self._awaiting_launch = False
        restored = self._params.restore_state is not None
        self._params = started.params
        self._started = started.started
        self._display = started.display
        state = started.state
        if state.status == VmStatus.UP and not restored:
            state = Transition(VmStatus.POWERING_UP)  # a fresh guest boots first
        self._set_read(state)
        if self._tracker.status == VmStatus.WAIT_FOR_LAUNCH:  # its events are late
            self._set(Transition(VmStatus.POWERING_UP))
        # The board learns the start time and displays even when the status did not change
        # here (events came first): elapsedTime and displayInfo from the first sample on.
        self._publish()
        self._extender().track(self._params)
        return {"vmID": self.vm_id, "status": str(self._tracker.status)}

    def _on_start_failed(self, _error: BaseException) -> None:
        self._awaiting_launch = False
        self._set(Transition(VmStatus.DOWN, exit_reason=ExitReason.START_FAILED))

    def _on_state(self, state: Transition) -> bool:
        self._set_read(state)
        return True

    def _on_destroyed(self, _result: Any) -> bool:
        self._set(Transition(VmStatus.DOWN, exit_reason=ExitReason.DESTROYED))
        return True

    def _on_forced_off(self, _result: Any) -> None:
        self._set(Transition(VmStatus.DOWN, exit_reason=ExitReason.DESTROYED))

    def _on_saved(self, _result: Any) -> bool:
        self._set(Transition(VmStatus.DOWN, exit_reason=ExitReason.SAVED))
        return True

    def _on_save_failed(self, before: VmStatus) -> None:
        if self._tracker.status == VmStatus.SAVING_STATE:
            self._tracker.set(before)
            self._after_change()
        self._attach()

    # --- re-attaching --------------------------------------------------------------------

    def _attach(self) -> None:
        if self._awaiting_launch or self._running().running(QUERY, CONTROL, DESTROY):
            return  # an operation in flight (a destroy too) sets the state; a resync re-reads it
        try:
            self._submit("attach", QUERY, timeout=self._env.config.call_timeout,
                         on_ok=self._on_attached, on_error=self._on_attach_failed,
                         work=lambda _c: self._ops_impl.attach())
        except VMError as e:  # GuestCallBusy: the previous attach is stuck
            self._on_attach_failed(e)

    def _on_attached(self, found: Attached | None) -> None:
        self._attach_delay = 1.0
        if self._migrations is not None and self._migrations.on_attached(found):
            return  # a migration a restart interrupted settles it
        if found is None:
            if self._running().running(DESTROY):
                return  # destroyed meanwhile: the destroy's own outcome says why
            if self._tracker.status != VmStatus.DOWN:
                log.warning("VM %s: its domain is gone", self._who)
                self._set(Transition(VmStatus.DOWN, exit_reason=ExitReason.UNKNOWN))
            return
        if found.params is not None:
            self._params = found.params
        self._started = found.started or self._started
        self._display = found.display or self._display
        state = found.state
        keep = {VmStatus.POWERING_DOWN, VmStatus.POWERING_UP}
        if not (state.status == VmStatus.UP and self._tracker.status in keep):
            self._set_read(state)
        self._publish()  # the name or start time may have changed
        if self._tracker.status != VmStatus.DOWN:
            self._extender().track(self._params)

    def _on_attach_failed(self, error: BaseException) -> None:
        if isinstance(error, LibvirtUnavailable):
            return  # the resync after the reconnect attaches again
        log.warning("VM %s: re-attaching failed (%s); again in %g s", self._who, error,
                    self._attach_delay)
        self._schedule("attach", self._attach_delay)
        self._attach_delay = min(ATTACH_RETRY_MAX, self._attach_delay * 2)

    # --- status ------------------------------------------------------------------------------

    def _set(self, transition: Transition, *, read: bool = False) -> None:
        """``read``: a state an operation read from libvirt (see :meth:`_set_read`)."""
        if transition.status is None:
            return
        if self._tracker.status == VmStatus.DOWN:
            return  # Down is final: a late result must not bring the VM back
        if not read and transition.status in OWN_STATUSES:
            self._changes_seen += 1
        self._tracker.set(transition.status, pause_code=transition.pause_code,
                          exit_reason=transition.exit_reason)
        self._after_change()

    def _set_read(self, transition: Transition) -> None:
        """A state an operation read from libvirt: lifecycle events that came meanwhile are
        newer, and so is an operation the actor began meanwhile (an attach that read a
        running domain must not turn a save or a migration back into Up)."""
        if not self._stale:
            self._set(transition, read=True)

    def _after_change(self) -> None:
        status = self._tracker.status
        if status == VmStatus.DOWN:
            for what in ("powered-up", "shutdown-deadline", "reboot-deadline"):
                self._cancel(what)
            if self._agent is not None:
                self._agent.on_down()
        elif status == VmStatus.POWERING_UP and "powered-up" not in self._timers:
            self._schedule("powered-up", self._env.config.powering_up)
        self._publish()
        if self._mode == "incoming" and status != VmStatus.MIGRATION_DESTINATION:
            self._awaiting_launch = False  # the guest arrived (or was lost): attach may run
        if self._migrations is not None:
            self._migrations.on_status(status)
        if self._thin is not None:
            self._thin.on_status()

    def _view(self) -> VmView:
        t = self._tracker
        agent = self._agent.state if self._agent is not None else None
        return VmView(self.vm_id, self._params.name, t.status, t.pause_code,
                      t.exit_reason if t.status == VmStatus.DOWN else None, self._started,
                      self._display, self._params.mem_mib, agent,
                      self._params.min_guaranteed_mib)

    def _key(self) -> tuple[Any, ...]:
        """What an event is published for: the status, and whether the agent answers (its
        other states show in the stats, not as events)."""
        view = self._view()
        answers = self._agent is not None and self._agent.responsive and view.active
        return view.status, view.pause_code, view.exit_reason, answers

    def _publish(self) -> None:
        view = self._view()
        self._board.put(view)
        key = self._key()
        if key == self._published:
            return
        self._published = key
        log.info("VM %s is %s", self._who, view.status)
        self.ctx.runtime.events.publish(f"|virt|VM_status|{self.vm_id}", view.to_wire())

    # --- timers ------------------------------------------------------------------------------

    def _schedule(self, what: TimerKind, delay: float, *, force: bool = False,
                  reboots: int = 0) -> None:
        self._timers.set(what, delay, _Timer(what, force, reboots))

    def _cancel(self, what: str) -> None:
        self._timers.cancel(what)


def _true(_result: Any) -> bool:
    return True


def _nothing() -> None:
    return None


def _same(result: Any) -> Any:
    return result


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    tell_or_drop(ref, message, log, "the VM actor")
