"""VmState: what one VM's actor knows of its VM, and the bookkeeping of its status.

Owned by :class:`~actors.vm.actor.VmActor` and shared with its plain helpers
(:class:`~actors.vm.lanes.Lanes`, :class:`~actors.vm.outcomes.Outcomes`,
:class:`~actors.vm.deadlines.Deadlines`); used on the actor's thread only (not
thread-safe). It holds the VM's params, start time and displays, its
:class:`~actors.vm.status.StatusTracker`, the libvirt events seen, and what tells whether a
state an operation read from libvirt is older than the lifecycle events that came meanwhile.

:meth:`VmState.set` changes the status (Down is final: a late result must not bring the VM
back) and calls the actor's ``on_change``; :meth:`VmState.publish` writes the VM's view to the
:class:`~actors.vm.board.VmBoard` and publishes ``|virt|VM_status|<vmID>`` when what an event
is published for changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from actors.base import EventSink
from actors.vm.board import VmBoard, VmView
from actors.vm.guestagent import GuestAgent
from actors.vm.inflight import Op
from actors.vm.params import VmParams
from actors.vm.status import StatusTracker, Transition, VmStatus

log = logging.getLogger(__name__)

RUNNING = frozenset({VmStatus.UP, VmStatus.POWERING_UP, VmStatus.POWERING_DOWN})
# Statuses of an operation the actor began, which a read of a running domain cannot show.
# (Not Up at the end of Powering up: a pause in flight then must still set Paused.)
OWN_STATUSES = frozenset({VmStatus.SAVING_STATE, VmStatus.MIGRATION_SOURCE,
                          VmStatus.POWERING_DOWN})


class VmState:
    def __init__(self, params: VmParams, *, board: VmBoard, events: EventSink,
                 started: float | None, on_change: Callable[[], None]) -> None:
        self.vm_id = params.vm_id
        self.params = params
        self.started = started
        self.display: tuple[dict[str, Any], ...] = ()
        self.tracker = StatusTracker()
        self.agent: GuestAgent | None = None  # the actor's agent once set up: in the view
        # libvirt's lifecycle events, and the statuses of an operation the actor began
        # (OWN_STATUSES): a state an operation read from libvirt before one of them is stale.
        self.changes_seen = 0
        self.reboots = 0  # libvirt reboot events seen
        self.stale = False  # did such a change come while the finishing op ran?
        self.awaiting_launch = False  # created, but its domain not started yet
        self._board = board
        self._events = events
        self._on_change = on_change
        self._published: tuple[Any, ...] | None = None

    @property
    def who(self) -> str:
        """The VM as log lines name it: id and name."""
        return f"{self.vm_id} ({self.params.name})"

    @property
    def status(self) -> VmStatus:
        return self.tracker.status

    def resume(self, known: VmView) -> None:
        """Continue from the VM's last view on the board (no spurious status change; a Down
        VM keeps its exit reason)."""
        self.tracker.set(known.status, pause_code=known.pause_code,
                         exit_reason=known.exit_reason)
        self.started = self.started or known.started
        self.display = known.display
        self._published = self.key()

    def before_outcome(self, op: Op) -> None:
        # A state the operation read is older than lifecycle events that came meanwhile.
        self.stale = op.events_at_start != self.changes_seen

    def set(self, transition: Transition, *, read: bool = False) -> None:
        """``read``: a state an operation read from libvirt (see :meth:`set_read`)."""
        if transition.status is None:
            return
        if self.tracker.status == VmStatus.DOWN:
            return  # Down is final: a late result must not bring the VM back
        if not read and transition.status in OWN_STATUSES:
            self.changes_seen += 1
        self.tracker.set(transition.status, pause_code=transition.pause_code,
                         exit_reason=transition.exit_reason)
        self.changed()

    def set_read(self, transition: Transition) -> None:
        """A state an operation read from libvirt: lifecycle events that came meanwhile are
        newer, and so is an operation the actor began meanwhile (an attach that read a
        running domain must not turn a save or a migration back into Up)."""
        if not self.stale:
            self.set(transition, read=True)

    def changed(self) -> None:
        """The tracker's status changed: the actor reacts (timers, components) and publishes."""
        self._on_change()

    def view(self) -> VmView:
        t = self.tracker
        agent = self.agent.state if self.agent is not None else None
        return VmView(self.vm_id, self.params.name, t.status, t.pause_code,
                      t.exit_reason if t.status == VmStatus.DOWN else None, self.started,
                      self.display, self.params.mem_mib, agent,
                      self.params.min_guaranteed_mib)

    def key(self) -> tuple[Any, ...]:
        """What an event is published for: the status, and whether the agent answers (its
        other states show in the stats, not as events)."""
        view = self.view()
        answers = self.agent is not None and self.agent.responsive and view.active
        return view.status, view.pause_code, view.exit_reason, answers

    def publish(self) -> None:
        view = self.view()
        self._board.put(view)
        key = self.key()
        if key == self._published:
            return
        self._published = key
        log.info("VM %s is %s", self.who, view.status)
        self._events.publish(f"|virt|VM_status|{self.vm_id}", view.to_wire())
