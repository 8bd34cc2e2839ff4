"""Outcomes: what each operation's result does to one VM's state, and re-attaching.

A plain helper of :class:`~actors.vm.actor.VmActor`, used on its thread only: its methods
are the ``on_ok`` and ``on_error`` of the actor's operations (a start, a destroy, a save, a
verb that read the domain's state), run by :class:`~actors.vm.inflight.InFlight` when the
operation ends. Re-attaching (recovery, a resync, a restart) reads the domain's state and
params back from libvirt on the ``query`` lane; a failed attach is tried again later, its
delay doubling up to :data:`ATTACH_RETRY_MAX` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from actors.vm.extender import Extender
from actors.vm.lanes import CONTROL, DESTROY, QUERY, Lanes
from actors.vm.migcontrol import MigrationControl
from actors.vm.ops import Attached, Started, VmOps
from actors.vm.status import ExitReason, Transition, VmStatus
from actors.vm.vmstate import VmState
from messaging.errors import LibvirtUnavailable, VMError

log = logging.getLogger(__name__)

ATTACH_RETRY_MAX = 60.0


class Outcomes:
    def __init__(self, state: VmState, *, lanes: Lanes, ops: VmOps, extender: Extender,
                 migrations: MigrationControl | None, call_timeout: float,
                 retry: Callable[[float], None]) -> None:
        """``retry(delay)``: attach again in ``delay`` seconds (the actor's timer)."""
        self._state = state
        self._lanes = lanes
        self._ops = ops
        self._extender = extender
        self._migrations = migrations
        self._call_timeout = call_timeout
        self._retry = retry
        self._attach_delay = 1.0

    # --- operations ending -------------------------------------------------------------------

    def started(self, started: Started) -> dict[str, Any]:
        s = self._state
        s.awaiting_launch = False
        restored = s.params.restore_state is not None
        s.params = started.params
        s.started = started.started
        s.display = started.display
        state = started.state
        if state.status == VmStatus.UP and not restored:
            state = Transition(VmStatus.POWERING_UP)  # a fresh guest boots first
        s.set_read(state)
        if s.status == VmStatus.WAIT_FOR_LAUNCH:  # its events are late
            s.set(Transition(VmStatus.POWERING_UP))
        # The board learns the start time and displays even when the status did not change
        # here (events came first): elapsedTime and displayInfo from the first sample on.
        s.publish()
        self._extender.track(s.params)
        return {"vmID": s.vm_id, "status": str(s.status)}

    def start_failed(self, _error: BaseException) -> None:
        self._state.awaiting_launch = False
        self._state.set(Transition(VmStatus.DOWN, exit_reason=ExitReason.START_FAILED))

    def read(self, state: Transition) -> bool:
        """A verb that read the domain's state when it ended (pause, cont)."""
        self._state.set_read(state)
        return True

    def destroyed(self, _result: Any) -> bool:
        self._state.set(Transition(VmStatus.DOWN, exit_reason=ExitReason.DESTROYED))
        return True

    def forced_off(self, _result: Any) -> None:
        self._state.set(Transition(VmStatus.DOWN, exit_reason=ExitReason.DESTROYED))

    def saved(self, _result: Any) -> bool:
        self._state.set(Transition(VmStatus.DOWN, exit_reason=ExitReason.SAVED))
        return True

    def save_failed(self, before: VmStatus) -> None:
        if self._state.status == VmStatus.SAVING_STATE:
            self._state.tracker.set(before)
            self._state.changed()
        self.attach()

    # --- re-attaching ------------------------------------------------------------------------

    def attach(self) -> None:
        if self._state.awaiting_launch or self._lanes.running(QUERY, CONTROL, DESTROY):
            return  # an operation in flight (a destroy too) sets the state; a resync re-reads it
        try:
            self._lanes.submit("attach", QUERY, timeout=self._call_timeout,
                               on_ok=self._attached, on_error=self._attach_failed,
                               work=lambda _c: self._ops.attach())
        except VMError as e:  # GuestCallBusy: the previous attach is stuck
            self._attach_failed(e)

    def _attached(self, found: Attached | None) -> None:
        s = self._state
        self._attach_delay = 1.0
        if self._migrations is not None and self._migrations.on_attached(found):
            return  # a migration a restart interrupted settles it
        if found is None:
            if self._lanes.running(DESTROY):
                return  # destroyed meanwhile: the destroy's own outcome says why
            if s.status != VmStatus.DOWN:
                log.warning("VM %s: its domain is gone", s.who)
                s.set(Transition(VmStatus.DOWN, exit_reason=ExitReason.UNKNOWN))
            return
        if found.params is not None:
            s.params = found.params
        s.started = found.started or s.started
        s.display = found.display or s.display
        state = found.state
        keep = {VmStatus.POWERING_DOWN, VmStatus.POWERING_UP}
        if not (state.status == VmStatus.UP and s.status in keep):
            s.set_read(state)
        s.publish()  # the name or start time may have changed
        if s.status != VmStatus.DOWN:
            self._extender.track(s.params)

    def _attach_failed(self, error: BaseException) -> None:
        if isinstance(error, LibvirtUnavailable):
            return  # the resync after the reconnect attaches again
        log.warning("VM %s: re-attaching failed (%s); again in %g s", self._state.who, error,
                    self._attach_delay)
        self._retry(self._attach_delay)
        self._attach_delay = min(ATTACH_RETRY_MAX, self._attach_delay * 2)
