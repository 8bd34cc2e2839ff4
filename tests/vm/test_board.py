"""The VM board: what VM.getStats / Host.getAllVmStats / Host.getVMList read."""

from __future__ import annotations

import threading

import pytest

from actors.vm.board import EMPTY_STATS, VmBoard, VmView
from actors.vm.status import ExitReason, PauseCode, VmStatus

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"


@pytest.mark.timeout(5)
def test_views_and_stats_merge() -> None:
    board = VmBoard()
    board.put(VmView(A, "a", VmStatus.UP, started=100.0))
    board.put(VmView(B, "b", VmStatus.PAUSED, PauseCode.ENOSPC))
    board.set_stats({A: {"cpuUser": 1.5, "monitorResponse": 0, "disks": {"vda": {}}},
                     "cccccccc-0000-4000-8000-000000000003": {"cpuUser": 9.0}}, 10.0)
    a, b = board.full_stats()
    assert a["vmID"] == A and a["vmName"] == "a" and a["status"] == "Up"
    assert a["cpuUser"] == 1.5 and a["disks"] == {"vda": {}}
    assert "pauseCode" not in a and "exitReason" not in a
    assert a["statsAge"] >= 0
    assert b["status"] == "Paused" and b["pauseCode"] == "ENOSPC"
    assert b["monitorResponse"] == EMPTY_STATS["monitorResponse"]  # not sampled yet
    assert "statsAge" not in b
    assert board.full_stats("cccccccc-0000-4000-8000-000000000003") == []  # not ours
    assert board.counts() == (2, 2)
    assert board.started() == {A: 100.0}


@pytest.mark.timeout(5)
def test_a_down_vm_reports_why_and_no_stale_stats() -> None:
    board = VmBoard()
    board.put(VmView(A, "a", VmStatus.UP))
    board.set_stats({A: {"cpuUser": 50.0, "monitorResponse": -1}}, 1.0)
    board.put(VmView(A, "a", VmStatus.DOWN, exit_reason=ExitReason.QEMU_DIED))
    (a,) = board.full_stats(A)
    assert a["status"] == "Down"
    assert (a["exitReason"], a["exitCode"]) == ("qemu-died", 1)
    assert a["exitMessage"] == ExitReason.QEMU_DIED.message
    assert a["cpuUser"] == 0.0 and a["monitorResponse"] == 0
    assert board.counts() == (1, 0)
    board.remove(A)
    assert board.full_stats() == [] and board.counts() == (0, 0)


@pytest.mark.timeout(5)
def test_what_the_actor_knows_is_shown_over_the_sample_while_the_vm_runs() -> None:
    board = VmBoard()
    board.set_part(A, "agent", {"guestFQDN": "early"})  # no view yet: dropped
    board.put(VmView(A, "a", VmStatus.UP, guest_agent="responsive"))
    board.set_stats({A: {"memUsage": 40, "balloonInfo": {"balloon_cur": 98304,
                                                         "balloon_target": 98304}}}, 1.0)
    board.set_part(A, "agent", {"guestFQDN": "web1", "appsList": ["kernel-6.1"]})
    board.set_part(A, "balloon", {"balloonInfo": {"balloon_target": 65536}})
    (a,) = board.full_stats(A)
    assert a["guestAgent"] == "responsive" and a["guestFQDN"] == "web1"
    assert a["balloonInfo"] == {"balloon_cur": 98304, "balloon_target": 65536}
    assert a["memUsage"] == 40
    board.put(VmView(A, "a", VmStatus.DOWN, exit_reason=ExitReason.SHUTDOWN,
                     guest_agent="unknown"))
    (down,) = board.full_stats(A)
    assert "guestFQDN" not in down and "guestAgent" not in down and "balloonInfo" not in down
    board.remove(A)
    board.put(VmView(A, "a", VmStatus.UP))
    assert "guestFQDN" not in board.full_stats(A)[0]  # a new VM of that id starts clean


@pytest.mark.timeout(5)
def test_readers_get_copies() -> None:
    board = VmBoard()
    board.put(VmView(A, "a", VmStatus.UP))
    board.set_stats({A: {"cpuUser": 1.0, "disks": {}}}, 1.0)
    first = board.full_stats(A)[0]
    first["cpuUser"] = 99.0
    first["status"] = "x"
    assert board.full_stats(A)[0]["cpuUser"] == 1.0
    assert board.full_stats(A)[0]["status"] == "Up"


@pytest.mark.timeout(20)
def test_concurrent_writers_and_readers() -> None:
    board = VmBoard()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(vm_id: str) -> None:
        try:
            while not stop.is_set():
                board.put(VmView(vm_id, "x", VmStatus.UP))
                board.set_stats({vm_id: {"cpuUser": 1.0}}, 1.0)
                board.remove(vm_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(v,)) for v in (A, B)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            for entry in board.full_stats():
                assert entry["vmID"] in (A, B)
            board.counts()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert not errors
