"""Status translation: tables, and the event sequences libvirt 9.0 / QEMU 7.2 really sent.

The sequences below were recorded here with a lifecycle and an IO_ERROR_REASON callback on
qemu:///system while booting the test guest (see the report of the VM layer).
"""

from __future__ import annotations

import libvirt
import pytest

from actors.vm.status import (
    NO_CHANGE,
    ExitReason,
    PauseCode,
    StatusTracker,
    Transition,
    VmStatus,
    from_event,
    from_state,
    pause_code_from_disk_errors,
    pause_code_from_io_error,
)

E = libvirt
STARTED, SUSPENDED, RESUMED, STOPPED, SHUTDOWN = (
    E.VIR_DOMAIN_EVENT_STARTED,
    E.VIR_DOMAIN_EVENT_SUSPENDED,
    E.VIR_DOMAIN_EVENT_RESUMED,
    E.VIR_DOMAIN_EVENT_STOPPED,
    E.VIR_DOMAIN_EVENT_SHUTDOWN,
)

PROTOCOL_STATUSES = {
    "WaitForLaunch", "Powering up", "Up", "Paused", "Powering down", "Down",
    "Migration Source", "Migration Destination", "Saving State", "Restoring state",
}


@pytest.mark.timeout(5)
def test_values_are_the_protocol_ones() -> None:
    assert {s.value for s in VmStatus} == PROTOCOL_STATUSES
    assert {c.value for c in PauseCode} == {"NOERR", "ENOSPC", "EIO", "EOTHER"}
    assert ExitReason.SHUTDOWN.exit_code == 0 and ExitReason.QEMU_DIED.exit_code == 1
    assert all(reason.message for reason in ExitReason)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("event", "detail", "expected"),
    [
        (STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED, Transition(VmStatus.POWERING_UP)),
        (STARTED, E.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
         Transition(VmStatus.MIGRATION_DESTINATION)),
        (STARTED, E.VIR_DOMAIN_EVENT_STARTED_RESTORED, Transition(VmStatus.RESTORING_STATE)),
        (SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
         Transition(VmStatus.PAUSED, PauseCode.NOERR)),
        (SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
         Transition(VmStatus.PAUSED, PauseCode.EIO)),
        (SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG,
         Transition(VmStatus.PAUSED, PauseCode.EOTHER)),
        (SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED, Transition(VmStatus.MIGRATION_SOURCE)),
        (SUSPENDED, 99, Transition(VmStatus.PAUSED, PauseCode.EOTHER)),
        (RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED, Transition(VmStatus.UP)),
        (RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_MIGRATED, Transition(VmStatus.UP)),
        (STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
         Transition(VmStatus.DOWN, exit_reason=ExitReason.SHUTDOWN)),
        (STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
         Transition(VmStatus.DOWN, exit_reason=ExitReason.DESTROYED)),
        (STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_FAILED,
         Transition(VmStatus.DOWN, exit_reason=ExitReason.QEMU_DIED)),
        (STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
         Transition(VmStatus.DOWN, exit_reason=ExitReason.CRASHED)),
        (STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_SAVED,
         Transition(VmStatus.DOWN, exit_reason=ExitReason.SAVED)),
        (STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
         Transition(VmStatus.DOWN, exit_reason=ExitReason.MIGRATED)),
        (STOPPED, 99, Transition(VmStatus.DOWN, exit_reason=ExitReason.UNKNOWN)),
        (SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST, Transition(VmStatus.POWERING_DOWN)),
        (E.VIR_DOMAIN_EVENT_CRASHED, E.VIR_DOMAIN_EVENT_CRASHED_PANICKED,
         Transition(None, exit_reason=ExitReason.CRASHED)),
        (E.VIR_DOMAIN_EVENT_DEFINED, 0, NO_CHANGE),
        (E.VIR_DOMAIN_EVENT_UNDEFINED, 0, NO_CHANGE),
        (1234, 0, NO_CHANGE),
    ],
)
def test_from_event(event: int, detail: int, expected: Transition) -> None:
    assert from_event(event, detail) == expected


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("state", "reason", "status", "code", "exit_reason"),
    [
        (E.VIR_DOMAIN_RUNNING, E.VIR_DOMAIN_RUNNING_BOOTED, VmStatus.UP, None, None),
        (E.VIR_DOMAIN_RUNNING, E.VIR_DOMAIN_RUNNING_UNPAUSED, VmStatus.UP, None, None),
        (E.VIR_DOMAIN_RUNNING, E.VIR_DOMAIN_RUNNING_RESTORED, VmStatus.UP, None, None),
        (E.VIR_DOMAIN_BLOCKED, 0, VmStatus.UP, None, None),
        (E.VIR_DOMAIN_PAUSED, E.VIR_DOMAIN_PAUSED_USER, VmStatus.PAUSED, PauseCode.NOERR, None),
        (E.VIR_DOMAIN_PAUSED, E.VIR_DOMAIN_PAUSED_IOERROR, VmStatus.PAUSED, PauseCode.EIO, None),
        (E.VIR_DOMAIN_PAUSED, E.VIR_DOMAIN_PAUSED_MIGRATION, VmStatus.MIGRATION_SOURCE, None,
         None),
        (E.VIR_DOMAIN_PAUSED, E.VIR_DOMAIN_PAUSED_SAVE, VmStatus.SAVING_STATE, None, None),
        (E.VIR_DOMAIN_PAUSED, E.VIR_DOMAIN_PAUSED_STARTING_UP, VmStatus.WAIT_FOR_LAUNCH, None,
         None),
        (E.VIR_DOMAIN_PAUSED, 99, VmStatus.PAUSED, PauseCode.EOTHER, None),
        (E.VIR_DOMAIN_SHUTDOWN, 0, VmStatus.POWERING_DOWN, None, None),
        (E.VIR_DOMAIN_SHUTOFF, E.VIR_DOMAIN_SHUTOFF_SHUTDOWN, VmStatus.DOWN, None,
         ExitReason.SHUTDOWN),
        (E.VIR_DOMAIN_SHUTOFF, E.VIR_DOMAIN_SHUTOFF_FAILED, VmStatus.DOWN, None,
         ExitReason.START_FAILED),
        (E.VIR_DOMAIN_SHUTOFF, E.VIR_DOMAIN_SHUTOFF_SAVED, VmStatus.DOWN, None, ExitReason.SAVED),
        (E.VIR_DOMAIN_CRASHED, 0, VmStatus.DOWN, None, ExitReason.CRASHED),
        (E.VIR_DOMAIN_PMSUSPENDED, 0, VmStatus.PAUSED, PauseCode.NOERR, None),
        (E.VIR_DOMAIN_NOSTATE, 0, VmStatus.WAIT_FOR_LAUNCH, None, None),
    ],
)
def test_from_state(
    state: int,
    reason: int,
    status: VmStatus,
    code: PauseCode | None,
    exit_reason: ExitReason | None,
) -> None:
    assert from_state(state, reason) == Transition(status, code, exit_reason)


@pytest.mark.timeout(5)
def test_io_error_reasons_and_disk_errors() -> None:
    assert pause_code_from_io_error("enospc") == PauseCode.ENOSPC  # what libvirt sent here
    assert pause_code_from_io_error("No space left on device") == PauseCode.ENOSPC
    assert pause_code_from_io_error("eio") == PauseCode.EIO
    assert pause_code_from_io_error("Input/output error") == PauseCode.EIO
    assert pause_code_from_io_error("") == PauseCode.EIO  # what libvirt sent here for EIO
    assert pause_code_from_io_error("eperm") == PauseCode.EOTHER
    no_space, unspec = E.VIR_DOMAIN_DISK_ERROR_NO_SPACE, E.VIR_DOMAIN_DISK_ERROR_UNSPEC
    assert pause_code_from_disk_errors({"vda": no_space}) == PauseCode.ENOSPC  # seen here
    assert pause_code_from_disk_errors({"vda": unspec, "vdb": no_space}) == PauseCode.ENOSPC
    assert pause_code_from_disk_errors({"vda": unspec}) == PauseCode.EIO
    assert pause_code_from_disk_errors({}) == PauseCode.NOERR


def replay(tracker: StatusTracker, events: list[tuple[int, int]]) -> list[VmStatus]:
    seen = []
    for event, detail in events:
        if tracker.on_event(event, detail):
            seen.append(tracker.status)
    return seen


@pytest.mark.timeout(5)
def test_recorded_start_pause_resume_acpi_shutdown() -> None:
    tracker = StatusTracker()
    # createXML: RESUMED(UNPAUSED) arrives before STARTED(BOOTED)
    assert replay(tracker, [(4, 0), (2, 0)]) == [VmStatus.POWERING_UP]
    tracker.set(VmStatus.UP)
    assert replay(tracker, [(3, 0)]) == [VmStatus.PAUSED]
    assert tracker.pause_code == PauseCode.NOERR
    assert replay(tracker, [(4, 0)]) == [VmStatus.UP]
    assert tracker.pause_code is None
    assert replay(tracker, [(6, 1), (5, 0)]) == [VmStatus.POWERING_DOWN, VmStatus.DOWN]
    assert tracker.exit_reason == ExitReason.SHUTDOWN
    assert tracker.exit_reason.exit_code == 0
    assert replay(tracker, [(2, 0), (4, 0)]) == []  # Down is final


@pytest.mark.timeout(5)
def test_recorded_requested_shutdown_keeps_powering_down() -> None:
    tracker = StatusTracker(VmStatus.UP)
    assert tracker.set(VmStatus.POWERING_DOWN)
    assert replay(tracker, [(6, 1), (5, 0)]) == [VmStatus.DOWN]


@pytest.mark.timeout(5)
def test_recorded_destroy_and_killed_qemu() -> None:
    destroyed = StatusTracker(VmStatus.UP)
    assert replay(destroyed, [(6, 2), (5, 1)]) == [VmStatus.POWERING_DOWN, VmStatus.DOWN]
    assert destroyed.exit_reason == ExitReason.DESTROYED
    killed = StatusTracker(VmStatus.UP)
    assert replay(killed, [(5, 5)]) == [VmStatus.DOWN]
    assert killed.exit_reason == ExitReason.QEMU_DIED
    assert killed.exit_reason.exit_code == 1


@pytest.mark.timeout(5)
def test_recorded_save_then_restore() -> None:
    saving = StatusTracker(VmStatus.UP)
    saving.set(VmStatus.SAVING_STATE)
    assert replay(saving, [(3, 0), (5, 4)]) == [VmStatus.DOWN]
    assert saving.exit_reason == ExitReason.SAVED
    restoring = StatusTracker(VmStatus.WAIT_FOR_LAUNCH)
    restoring.set(VmStatus.RESTORING_STATE)
    assert replay(restoring, [(2, 2), (4, 2)]) == [VmStatus.UP]


@pytest.mark.timeout(5)
def test_recorded_enospc_pause() -> None:
    tracker = StatusTracker(VmStatus.UP)
    tracker.on_io_error(E.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE, "enospc")
    assert replay(tracker, [(3, 2)]) == [VmStatus.PAUSED]
    assert tracker.pause_code == PauseCode.ENOSPC
    assert replay(tracker, [(4, 0)]) == [VmStatus.UP]
    # A later I/O error without a reason event is an EIO.
    assert replay(tracker, [(3, 2)]) == [VmStatus.PAUSED]
    assert tracker.pause_code == PauseCode.EIO


@pytest.mark.timeout(5)
def test_report_only_io_errors_do_not_set_a_pause_code() -> None:
    tracker = StatusTracker(VmStatus.UP)
    tracker.on_io_error(E.VIR_DOMAIN_EVENT_IO_ERROR_REPORT, "enospc")
    replay(tracker, [(3, 2)])
    assert tracker.pause_code == PauseCode.EIO


@pytest.mark.timeout(5)
def test_guest_panic_then_destroy_is_a_crash() -> None:
    tracker = StatusTracker(VmStatus.UP)
    assert replay(tracker, [(8, 0), (5, 2)]) == [VmStatus.DOWN]
    assert tracker.exit_reason == ExitReason.CRASHED


@pytest.mark.timeout(5)
def test_migration_source_ignores_its_own_pause() -> None:
    tracker = StatusTracker(VmStatus.UP)
    tracker.set(VmStatus.MIGRATION_SOURCE)
    assert replay(tracker, [(3, 1)]) == []
    assert replay(tracker, [(5, 3)]) == [VmStatus.DOWN]
    assert tracker.exit_reason == ExitReason.MIGRATED


@pytest.mark.timeout(5)
def test_set_down_after_a_failed_start() -> None:
    tracker = StatusTracker()
    assert tracker.set(VmStatus.DOWN, exit_reason=ExitReason.START_FAILED)
    assert tracker.exit_reason == ExitReason.START_FAILED
    assert not tracker.set(VmStatus.DOWN)
    assert tracker.exit_reason == ExitReason.START_FAILED
