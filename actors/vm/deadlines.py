"""Deadlines: the timers of one VM's actor, and what each does when it fires.

A plain helper of :class:`~actors.vm.actor.VmActor`, used on its thread only. A timer's
message (:class:`Timer`) goes to the actor, which hands it back to :meth:`Deadlines.fired`
(:class:`~actors.clock.NamedTimers` tells a cancelled or replaced one apart):

- ``powered-up``: a VM ``Powering up`` for ``powering_up`` seconds is ``Up``;
- ``shutdown-deadline``, ``reboot-deadline``: past a shutdown's (or reboot's) ``delay`` the
  VM is destroyed (or reset) if the caller asked (``force``), else a VM still
  ``Powering down`` is ``Up`` again;
- ``attach``: the retry of a failed re-attach; ``incoming``: an arriving migration's deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from actors.clock import Clock, NamedTimers
from actors.vm.lanes import DESTROY, Lanes
from actors.vm.migcontrol import MigrationControl
from actors.vm.ops import VmOps
from actors.vm.outcomes import Outcomes
from actors.vm.status import Transition, VmStatus
from actors.vm.vmstate import RUNNING, VmState
from messaging.errors import VMError

log = logging.getLogger(__name__)

TimerKind = Literal["powered-up", "shutdown-deadline", "reboot-deadline", "attach", "incoming"]


@dataclass(frozen=True, eq=False)
class Timer:
    """A timer of the actor fired (:class:`NamedTimers` tells it from a stale one)."""

    what: TimerKind
    force: bool = False
    reboots: int = 0  # reboot events seen when a reboot was asked for


class Deadlines:
    def __init__(self, state: VmState, *, clock: Clock, tell: Callable[[Timer], None],
                 powering_up: float, ops: VmOps, lanes: Lanes, outcomes: Outcomes,
                 migrations: MigrationControl | None) -> None:
        self._state = state
        self._timers: NamedTimers[Timer] = NamedTimers(clock, tell)
        self._powering_up = powering_up
        self._ops = ops
        self._lanes = lanes
        self._outcomes = outcomes
        self._migrations = migrations

    def schedule(self, what: TimerKind, delay: float, *, force: bool = False,
                 reboots: int = 0) -> None:
        self._timers.set(what, delay, Timer(what, force, reboots))

    def names(self) -> list[str]:
        return self._timers.names()

    def close(self) -> None:
        self._timers.cancel_all()

    def on_status(self, status: VmStatus) -> None:
        """The VM's status changed: a Down VM has no deadlines; one powering up gets Up."""
        if status == VmStatus.DOWN:
            for what in ("powered-up", "shutdown-deadline", "reboot-deadline"):
                self._timers.cancel(what)
        elif status == VmStatus.POWERING_UP and "powered-up" not in self._timers:
            self.schedule("powered-up", self._powering_up)

    def fired(self, timer: Timer) -> None:
        if not self._timers.fired(timer.what, timer):
            return  # cancelled or replaced
        state = self._state
        if timer.what == "powered-up" and state.status == VmStatus.POWERING_UP:
            state.set(Transition(VmStatus.UP))
        elif timer.what == "shutdown-deadline" and state.status != VmStatus.DOWN:
            self._shutdown_deadline(timer.force)
        elif timer.what == "reboot-deadline" and state.reboots == timer.reboots:
            self._reboot_deadline(timer.force)
        elif timer.what == "attach":
            self._outcomes.attach()
        elif timer.what == "incoming" and self._migrations is not None:
            self._migrations.on_deadline()

    def _shutdown_deadline(self, force: bool) -> None:
        state = self._state
        if not force:
            log.warning("VM %s did not power off in time (not forced): it stays up",
                        state.who)
            if state.status == VmStatus.POWERING_DOWN:
                state.set(Transition(VmStatus.UP))
            return
        log.warning("VM %s did not power off in time: destroying it", state.who)
        if not self._lanes.running(DESTROY):
            params, ops = state.params, self._ops
            self._lanes.submit("shutdown deadline", DESTROY,
                               timeout=self._lanes.destroy_timeout(),
                               on_ok=self._outcomes.forced_off,
                               work=lambda _c: ops.destroy(params))

    def _reboot_deadline(self, force: bool) -> None:
        vm_id = self._state.vm_id
        if self._state.status not in RUNNING:
            return
        if not force:
            log.warning("VM %s did not reboot in time (not forced)", vm_id)
            return
        log.warning("VM %s did not reboot in time: resetting it", vm_id)
        ops = self._ops
        try:
            self._lanes.control("reboot deadline", (), lambda _p: ops.reset(), _true)
        except VMError as e:
            log.warning("VM %s: cannot reset it now: %s", vm_id, e)


def _true(_result: Any) -> bool:
    return True
