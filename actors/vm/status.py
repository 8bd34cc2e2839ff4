"""VM status as PROTOCOL.md names it, from libvirt's states, lifecycle events and I/O errors.

Pure tables and functions; the VM actor feeds them and overlays what only it knows (a
migration or hibernation it started, a shutdown it requested, a start still in progress):

- :func:`from_event` maps a lifecycle event (``VIR_DOMAIN_EVENT_*`` and its detail) to a
  :class:`Transition`: the new status (or None: no change), the pauseCode of a paused VM and,
  for a VM that went Down, why it did (:class:`ExitReason`).
- :func:`from_state` maps ``dom.state()`` (state, reason) to the same, for recovery and for a
  VM whose events were missed.
- :func:`pause_code_from_io_error` and :func:`pause_code_from_disk_errors` give the pauseCode
  of a VM paused by an I/O error, from ``VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON``'s reason or from
  ``dom.diskErrors()``.

``Powering up`` lasts from the start until the actor decides the guest is up (a policy of the
actor, e.g. the guest agent answered or some seconds passed): libvirt has no such event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import libvirt


class VmStatus(StrEnum):
    WAIT_FOR_LAUNCH = "WaitForLaunch"
    POWERING_UP = "Powering up"
    UP = "Up"
    PAUSED = "Paused"
    POWERING_DOWN = "Powering down"
    DOWN = "Down"
    MIGRATION_SOURCE = "Migration Source"
    MIGRATION_DESTINATION = "Migration Destination"
    SAVING_STATE = "Saving State"
    RESTORING_STATE = "Restoring state"


class PauseCode(StrEnum):
    NOERR = "NOERR"  # paused by a user (VM.pause) or for a reason that is no error
    ENOSPC = "ENOSPC"  # a disk ran out of space (a thin volume to extend)
    EIO = "EIO"  # a disk returned an I/O error
    EOTHER = "EOTHER"  # anything else (watchdog, failed API call, crash, ...)


class ExitReason(StrEnum):
    """Why a VM is Down. ``exit_code`` is 0 for the expected ends, 1 for failures."""

    SHUTDOWN = "shutdown"  # the guest powered itself off (or obeyed an ACPI request)
    DESTROYED = "destroyed"  # destroyed from the host (VM.destroy, virsh destroy)
    CRASHED = "crashed"  # the guest crashed (panic) and on_crash destroyed it
    QEMU_DIED = "qemu-died"  # the qemu process went away under the VM
    SAVED = "saved"  # its state was saved to a file (VM.hibernate)
    MIGRATED = "migrated"  # it now runs on another host
    START_FAILED = "start-failed"  # it never started
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> int:
        return 1 if self in _FAILURES else 0

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_FAILURES = frozenset(
    {ExitReason.CRASHED, ExitReason.QEMU_DIED, ExitReason.START_FAILED, ExitReason.UNKNOWN}
)
_MESSAGES = {
    ExitReason.SHUTDOWN: "the guest shut down",
    ExitReason.DESTROYED: "the VM was destroyed",
    ExitReason.CRASHED: "the guest crashed",
    ExitReason.QEMU_DIED: "the qemu process died",
    ExitReason.SAVED: "the VM state was saved",
    ExitReason.MIGRATED: "the VM migrated to another host",
    ExitReason.START_FAILED: "the VM failed to start",
    ExitReason.UNKNOWN: "the VM stopped for an unknown reason",
}


@dataclass(frozen=True)
class Transition:
    """What an event or a state says about a VM. None members mean "no change/not known"."""

    status: VmStatus | None
    pause_code: PauseCode | None = None
    exit_reason: ExitReason | None = None


NO_CHANGE = Transition(None)
_UP = Transition(VmStatus.UP)
_DOWN_UNKNOWN = Transition(VmStatus.DOWN, exit_reason=ExitReason.UNKNOWN)


def _paused(code: PauseCode) -> Transition:
    return Transition(VmStatus.PAUSED, code)


def _down(reason: ExitReason) -> Transition:
    return Transition(VmStatus.DOWN, exit_reason=reason)


# Detail codes that the libvirt 9.0 binding may not name (added in later libvirt releases).
_SUSPENDED_API_ERROR = 6
_PAUSED_API_ERROR = 14

_EVENTS: dict[int, dict[int, Transition]] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: {
        libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED: Transition(VmStatus.POWERING_UP),
        libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED: Transition(VmStatus.MIGRATION_DESTINATION),
        libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED: Transition(VmStatus.RESTORING_STATE),
        libvirt.VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT: Transition(VmStatus.POWERING_UP),
        libvirt.VIR_DOMAIN_EVENT_STARTED_WAKEUP: _UP,
    },
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: {
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: _paused(PauseCode.NOERR),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: Transition(VmStatus.MIGRATION_SOURCE),
        # The I/O error event (IO_ERROR_REASON) tells ENOSPC from EIO; see pause_code_from_io_error.
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: _paused(PauseCode.EIO),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG: _paused(PauseCode.EOTHER),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_RESTORED: _paused(PauseCode.NOERR),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT: _paused(PauseCode.NOERR),
        _SUSPENDED_API_ERROR: _paused(PauseCode.EOTHER),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: Transition(VmStatus.MIGRATION_SOURCE),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED: _paused(PauseCode.EOTHER),
    },
    libvirt.VIR_DOMAIN_EVENT_RESUMED: {
        libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED: _UP,
        libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED: _UP,
        libvirt.VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT: _UP,
        libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY: Transition(VmStatus.MIGRATION_DESTINATION),
        libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED: _paused(PauseCode.EOTHER),
    },
    libvirt.VIR_DOMAIN_EVENT_STOPPED: {
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: _down(ExitReason.SHUTDOWN),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: _down(ExitReason.DESTROYED),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: _down(ExitReason.CRASHED),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: _down(ExitReason.MIGRATED),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: _down(ExitReason.SAVED),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: _down(ExitReason.QEMU_DIED),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: _down(ExitReason.DESTROYED),
    },
    # The guest finished its shutdown; STOPPED follows (on_poweroff is destroy).
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: {},
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: {},
    # The guest panicked; with on_crash=destroy a STOPPED(CRASHED) event follows.
    libvirt.VIR_DOMAIN_EVENT_CRASHED: {},
}
# Events whose detail does not matter, for details not in the tables above.
_EVENT_DEFAULT: dict[int, Transition] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: Transition(VmStatus.POWERING_UP),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: _paused(PauseCode.EOTHER),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: _UP,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: _DOWN_UNKNOWN,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: Transition(VmStatus.POWERING_DOWN),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: _paused(PauseCode.NOERR),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: Transition(None, exit_reason=ExitReason.CRASHED),
}


def from_event(event: int, detail: int) -> Transition:
    """The transition of a ``VIR_DOMAIN_EVENT_ID_LIFECYCLE`` event. DEFINED/UNDEFINED and
    unknown events are :data:`NO_CHANGE`."""
    by_detail = _EVENTS.get(event)
    if by_detail is None:
        return NO_CHANGE
    return by_detail.get(detail) or _EVENT_DEFAULT[event]


_RUNNING = {
    libvirt.VIR_DOMAIN_RUNNING_RESTORED: _UP,
    libvirt.VIR_DOMAIN_RUNNING_POSTCOPY: Transition(VmStatus.MIGRATION_DESTINATION),
    libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED: _paused(PauseCode.EOTHER),
}
_PAUSED = {
    libvirt.VIR_DOMAIN_PAUSED_UNKNOWN: _paused(PauseCode.NOERR),
    libvirt.VIR_DOMAIN_PAUSED_USER: _paused(PauseCode.NOERR),
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: Transition(VmStatus.MIGRATION_SOURCE),
    libvirt.VIR_DOMAIN_PAUSED_SAVE: Transition(VmStatus.SAVING_STATE),
    libvirt.VIR_DOMAIN_PAUSED_DUMP: _paused(PauseCode.NOERR),
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: _paused(PauseCode.EIO),
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: _paused(PauseCode.EOTHER),
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: _paused(PauseCode.NOERR),
    libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: Transition(VmStatus.POWERING_DOWN),
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: _paused(PauseCode.NOERR),
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: _paused(PauseCode.EOTHER),
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: Transition(VmStatus.WAIT_FOR_LAUNCH),
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: Transition(VmStatus.MIGRATION_SOURCE),
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: _paused(PauseCode.EOTHER),
    _PAUSED_API_ERROR: _paused(PauseCode.EOTHER),
}
_SHUTOFF = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: _down(ExitReason.SHUTDOWN),
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: _down(ExitReason.DESTROYED),
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: _down(ExitReason.CRASHED),
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: _down(ExitReason.MIGRATED),
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: _down(ExitReason.SAVED),
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: _down(ExitReason.START_FAILED),
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: _down(ExitReason.DESTROYED),
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: _down(ExitReason.QEMU_DIED),
}


def from_state(state: int, reason: int) -> Transition:
    """The status of a domain in ``dom.state()`` == [state, reason]. Never NO_CHANGE."""
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return _RUNNING.get(reason, _UP)
    if state == libvirt.VIR_DOMAIN_PAUSED:
        return _PAUSED.get(reason, _paused(PauseCode.EOTHER))
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return Transition(VmStatus.POWERING_DOWN)
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return _SHUTOFF.get(reason, _DOWN_UNKNOWN)
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return _down(ExitReason.CRASHED)
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return _paused(PauseCode.NOERR)
    return Transition(VmStatus.WAIT_FOR_LAUNCH)  # VIR_DOMAIN_NOSTATE


def pause_code_from_io_error(reason: str) -> PauseCode:
    """The pauseCode for the ``reason`` of an ``IO_ERROR_REASON`` event.

    libvirt passes ``"enospc"`` when qemu flagged the error as no-space, else qemu's own
    text (an errno name or a strerror message), or "" when it gave none. Measured on libvirt
    9.0 / QEMU 7.2: a write failing with EIO comes with "", so "" is EIO, as a bare
    SUSPENDED(IOERROR) and the state PAUSED(IOERROR) are.
    """
    text = reason.strip().lower()
    if text in ("enospc", "nospace") or "no space" in text:
        return PauseCode.ENOSPC
    if text in ("", "eio") or "input/output" in text:
        return PauseCode.EIO
    return PauseCode.EOTHER


def pause_code_from_disk_errors(errors: dict[str, int]) -> PauseCode:
    """The pauseCode from ``dom.diskErrors()`` ({disk: VIR_DOMAIN_DISK_ERROR_*}): ENOSPC
    wins over EIO, which wins over no error (NOERR)."""
    codes = set(errors.values())
    if libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE in codes:
        return PauseCode.ENOSPC
    if libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC in codes:
        return PauseCode.EIO
    return PauseCode.NOERR


def read_state(dom: libvirt.virDomain) -> Transition:
    """A live domain's status now (blocking libvirt calls: never on an actor's thread). The
    state cannot tell ENOSPC from EIO for a VM paused on an I/O error; its disks' I/O status
    (``dom.diskErrors()``) can, so a VM found paused after a restart keeps its ENOSPC."""
    raw = dom.state()
    state = from_state(raw[0], raw[1])
    if (raw[0], raw[1]) == (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR):
        code = pause_code_from_disk_errors(dom.diskErrors())
        if code == PauseCode.ENOSPC:
            state = Transition(state.status, code)
    return state


def is_io_error_pause(action: int) -> bool:
    """Whether an IO_ERROR(_REASON) event's ``action`` paused the VM."""
    return bool(action == libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE)


class StatusTracker:
    """The status of one VM, fed with events in the order libvirt delivers them.

    It applies :func:`from_event` with the context that real event sequences need (measured
    on libvirt 9.0 / QEMU 7.2):

    - a start delivers RESUMED(UNPAUSED) *before* STARTED(BOOTED): a RESUMED while the VM is
      still ``WaitForLaunch`` is ignored;
    - an I/O error delivers ``IO_ERROR_REASON`` (action pause, reason ``enospc``) *before*
      SUSPENDED(IOERROR): the pauseCode comes from the former (:meth:`on_io_error`);
    - a save delivers SUSPENDED(PAUSED) then STOPPED(SAVED), and an outgoing migration
      SUSPENDED(MIGRATED): while the actor has set ``Saving State`` or ``Migration Source``
      a SUSPENDED keeps that status;
    - ``virDomainDestroy`` delivers SHUTDOWN(HOST) then STOPPED(DESTROYED); a guest power-off
      or an ACPI shutdown SHUTDOWN(GUEST) then STOPPED(SHUTDOWN); a killed qemu only
      STOPPED(FAILED);
    - ``Down`` is final: later events are ignored.

    Statuses that only the actor knows (``Saving State``, ``Migration Source``, a requested
    ``Powering down``, ``Up`` at the end of ``Powering up``, ``Down`` after a failed start)
    are set with :meth:`set`. Not thread-safe: one owner (the VM actor).
    """

    def __init__(self, status: VmStatus = VmStatus.WAIT_FOR_LAUNCH) -> None:
        self.status = status
        self.pause_code: PauseCode | None = None
        self.exit_reason: ExitReason | None = None
        self._io_error: PauseCode | None = None
        self._crashed = False

    def set(
        self,
        status: VmStatus,
        *,
        pause_code: PauseCode | None = None,
        exit_reason: ExitReason | None = None,
    ) -> bool:
        """Set the status from the actor's own knowledge; returns whether it changed."""
        before = (self.status, self.pause_code)
        self.status = status
        self.pause_code = (pause_code or PauseCode.NOERR) if status == VmStatus.PAUSED else None
        if status == VmStatus.DOWN:
            self.exit_reason = exit_reason or self.exit_reason or ExitReason.UNKNOWN
        return before != (self.status, self.pause_code)

    def on_io_error(self, action: int, reason: str) -> None:
        """An ``IO_ERROR_REASON`` event: remember its pauseCode for the SUSPENDED to come."""
        if is_io_error_pause(action):
            self._io_error = pause_code_from_io_error(reason)

    def on_event(self, event: int, detail: int) -> bool:
        """A lifecycle event; returns whether status or pauseCode changed."""
        if self.status == VmStatus.DOWN:
            return False
        transition = from_event(event, detail)
        if transition.exit_reason == ExitReason.CRASHED:
            self._crashed = True
        new = transition.status
        if new is None:
            return False
        if event == libvirt.VIR_DOMAIN_EVENT_RESUMED and self.status == VmStatus.WAIT_FOR_LAUNCH:
            return False
        if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED and self.status in (
            VmStatus.SAVING_STATE,
            VmStatus.MIGRATION_SOURCE,
        ):
            return False
        if event == libvirt.VIR_DOMAIN_EVENT_SHUTDOWN and self.status == VmStatus.POWERING_DOWN:
            return False
        pause_code = transition.pause_code
        if (event, detail) == (
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
        ):
            pause_code = self._io_error or PauseCode.EIO
        if new == VmStatus.UP:
            self._io_error = None
        reason = transition.exit_reason
        if new == VmStatus.DOWN and self._crashed and reason == ExitReason.DESTROYED:
            reason = ExitReason.CRASHED
        return self.set(new, pause_code=pause_code, exit_reason=reason)
