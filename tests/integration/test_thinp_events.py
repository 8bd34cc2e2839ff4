"""Thin provisioning: what a VM's extender does with many requests for one volume, and with
a threshold event that never comes. Real vdsmd, a real loop domain, a real guest writing
with O_DIRECT (tests/integration/test_thinp.py has the basic flows).

- **Coalescing.** While an extension of a volume is in flight, further threshold events, an
  ENOSPC pause and the slow checks for that volume join it: one extension in flight (one
  job of the VM, one request in the storage mailbox with one waiter), one follow-up once it
  lands, never a second extension of the volume at the same time. The extension is held in
  flight by stopping the SPM role (the request waits in the mailbox until an SPM serves
  it), and the one-shot threshold is armed again by the test through libvirt, so that the
  guest's next write fires another event.
- **The follow-up** after an extension goes by the furthest write that the requests which
  joined it reported (here a threshold event past 40 MiB while the first extension, asked
  before the guest wrote anything, waited for an SPM): it extends at once, and the slow
  check finds nothing left (``missed`` in ``Actors.inspect`` stays 0).
- **A lost event.** The agent arms the threshold; the test disarms it (libvirt
  ``setBlockThreshold(node, 0)``), as if libvirt had lost the event, and lets the guest
  write past it. No event can come, yet the slow check (``[thin] check_interval``) reads
  the drive's allocation and extends it. So that the agent cannot arm the threshold again
  between the test's disarming and the guest's writes, vdsmd is SIGSTOPped meanwhile, and
  the guest writes only when the test shrinks its balloon (the guest's ``below`` gate).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.harness import wait_for
from tests.storage.rig import SPM_CONFIG, Rig
from tests.vm import agent as a
from tests.vm.thin import EXTENDED, VM_STATUS, Events, MiB, check_written, ids, thin_settings
from tests.vm.thin import writer_params as params_of

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt, pytest.mark.root]

STORAGE = "[storage]\nmonitor_interval = 1\nmonitor_timeout = 2\n"
# The SPM's keeper gives the role up when vdsmd is silent for agent_timeout: the lost-event
# test stops vdsmd for a few seconds, and its host must stay the SPM.
PATIENT_SPM = SPM_CONFIG.replace("agent_timeout = 2\n", "agent_timeout = 120\n")
assert PATIENT_SPM != SPM_CONFIG
# Nor may a libvirt probe that was in flight when vdsmd stopped read as libvirtd stalling:
# the VMs would be re-attached and their drives looked at again (not the slow check).
PATIENT_PROBE = "[libvirt]\nstall_timeout = 120\nreconnect_after = 120\n"


def make_rig(tmp_path: Path, spm: str = SPM_CONFIG, extra: str = "", **thin: Any) -> Rig:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    return Rig(tmp_path, config=a.config(hooks) + spm + STORAGE + extra
               + thin_settings(check_interval=1.0, **thin))


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    opened = libvirt.open("qemu:///system")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def cleanup(conn: libvirt.virConnect) -> Iterator[list[Rig]]:
    rigs: list[Rig] = []
    try:
        yield rigs
    finally:
        try:
            for rig in rigs:
                if rig.daemon is not None:
                    if rig.daemon.proc is not None and rig.daemon.proc.poll() is None:
                        _continue(rig.daemon.pid)  # a test that failed while it was stopped
                    a.destroy_owned(conn, a.owner(rig.daemon))
        finally:
            for rig in rigs:
                rig.cleanup()


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def thin_volume(rig: Rig, *, capacity: int, initial: int) -> dict[str, str]:
    """A loop domain, a pool this vdsmd is the SPM of, and a thin volume in it."""
    sd = rig.domain("loop", str(rig.local_dir("storage")))
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    img, vol, task = rig.create_volume(sp, sd, size=capacity, fmt="cow",
                                       initialSize=initial)
    assert rig.task(task)["taskResult"] == "success"
    return ids(sp, sd, img, vol)


def inspect(rig: Rig, path: str) -> dict[str, Any]:
    detail: dict[str, Any] = rig.call("Actors.inspect", path=path)["detail"]
    return detail


def thin(rig: Rig, vm_id: str) -> dict[str, Any]:
    """The VM's thin provisioning as ``Actors.inspect`` shows it."""
    detail: dict[str, Any] = inspect(rig, f"/vms/{vm_id}")["thin"]
    return detail


def vda(rig: Rig, vm_id: str) -> dict[str, Any]:
    drive: dict[str, Any] = thin(rig, vm_id)["drives"]["vda"]
    return drive


def armed(conn: libvirt.virConnect, dom: libvirt.virDomain) -> int | None:
    """The block threshold libvirt has on the VM's first disk (None: none is set)."""
    [(_dom, stats)] = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_BLOCK)
    value = stats.get("block.0.threshold")
    return int(value) if value else None


def heard(rig: Rig, vm_id: str) -> dict[str, Any] | None:
    """The VM's first thin drive once the agent got a threshold event for it."""
    drive = vda(rig, vm_id)
    return drive if drive["events"] else None


def sized(rig: Rig, vm_id: str, physical: int) -> dict[str, Any] | None:
    """The VM's first thin drive once the agent knows it has ``physical`` bytes."""
    drive = vda(rig, vm_id)
    return drive if drive["physical"] == physical else None


def extended(rig: Rig, vm_id: str) -> dict[str, Any] | None:
    """The VM's stats of its first disk once it was extended."""
    disk: dict[str, Any] = a.status(rig.d, vm_id)["disks"]["vda"]
    return disk if disk["extensions"] else None


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


GATE_BELOW = 75  # MiB of MemTotal: ~90 at 128 MiB of RAM, ~58 once the balloon is at 96
BALLOON = 96 * 1024  # KiB


def test_the_follow_up_extends_by_what_the_requests_that_joined_said(
        tmp_path: Path, cleanup: list[Rig], conn: libvirt.virConnect) -> None:
    """The first extension is asked for before the guest writes anything; while it waits
    for an SPM, a threshold event says the guest wrote past 40 MiB. Once it lands, its
    follow-up extends again at once by that event's offset, not by what the first job knew
    when it started: the slow check finds nothing left to do (``missed`` stays 0)."""
    rig = make_rig(tmp_path, chunk_mib=32, chunk_max_mib=32, adaptive=False,
                   extend_timeout=120.0)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig, capacity=128 * MiB, initial=64 * MiB)
    sp, vol = volume["storagepoolID"], volume["volumeID"]
    mailbox = f"/storage/pools/{sp}/mailbox"
    assert rig.call("StoragePool.spmStop", storagepoolID=sp) is True
    # thresholdMiB 64: the whole volume is the watermark, so the agent's first look at the
    # drive asks for room (64 -> 96 MiB) while the guest waits at its gate.
    vm_id, mib = a.new_id(), 44
    serial = a.serial_log(rig.d, vm_id)
    with rig.subscriber(EXTENDED) as sub:
        events = Events(sub)
        rig.call("VM.create", vmID=vm_id, vmParams=params_of(
            image, volume, mib, below=GATE_BELOW, hold=True, thresholdMiB=64))
        g.wait_for_marker(serial, g.MARKER_READY, a.BOOT_TIMEOUT)
        wait_for(lambda: inspect(rig, mailbox)["pending"], 60, 0.1,
                 "the first extension request in the mailbox")
        drive = vda(rig, vm_id)
        assert drive["busy"] and drive["allocation"] < MiB, drive
        dom = conn.lookupByUUIDString(vm_id)
        dom.setBlockThreshold(drive["node"], 40 * MiB)  # as if the agent had armed it there
        dom.setMemoryFlags(BALLOON, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # write, then hold
        g.wait_for_marker(serial, f"{g.MARKER_WRITE_DONE} {mib}", 120,
                          fail_markers=(g.MARKER_WRITE_FAILED, g.MARKER_KERNEL_PANIC))
        drive = wait_for(lambda: heard(rig, vm_id), 30, 0.1,
                         "the agent to get the threshold event")
        assert drive["allocation"] > 40 * MiB and drive["busy"] and drive["again"], drive
        box = inspect(rig, mailbox)
        assert [(p["volUUID"], p["waiters"]) for p in box["pending"]] == [(vol, 1)], box

        rig.spm_start(sp)
        events.drain(lambda: len(events.extensions(vol)) >= 2, 60)
    assert [e["newSize"] for e in events.extensions(vol)] == [96 * MiB, 128 * MiB]
    # (storage publishes an extension before the job that asked for it tells the agent)
    drive = wait_for(lambda: sized(rig, vm_id, 128 * MiB), 30, 0.1,
                     "the agent to see the second extension")
    assert drive["extensions"] == 2 and drive["events"] >= 1 and drive["missed"] == 0, drive
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)


def test_requests_for_a_volume_while_its_extension_waits_join_it(
        tmp_path: Path, cleanup: list[Rig], conn: libvirt.virConnect) -> None:
    rig = make_rig(tmp_path, chunk_mib=8, chunk_max_mib=8, adaptive=False,
                   extend_timeout=120.0)  # no retry while the test holds the extension
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig, capacity=128 * MiB, initial=64 * MiB)
    sp, vol = volume["storagepoolID"], volume["volumeID"]
    mailbox = f"/storage/pools/{sp}/mailbox"
    assert rig.call("StoragePool.spmStop", storagepoolID=sp) is True  # no SPM from now on
    vm_id, mib = a.new_id(), 80  # more than the 64 MiB it has: it runs out
    serial = a.serial_log(rig.d, vm_id)
    with rig.subscriber(EXTENDED, VM_STATUS) as sub:
        events = Events(sub)
        # thresholdMiB 56: the threshold sits at 8 MiB; ~3 MiB/s at most: ~20 s to the end
        rig.call("VM.create", vmID=vm_id, vmParams=params_of(
            image, volume, mib, chunk=1, sleep=0.3, thresholdMiB=56))

        # 1. The guest passes 8 MiB: the event's extension waits in the mailbox for an SPM.
        wait_for(lambda: inspect(rig, mailbox)["pending"], 120, 0.1,
                 "the first extension request in the mailbox")
        drive = vda(rig, vm_id)
        node, first = drive["node"], drive["events"]
        assert first >= 1, drive
        dom = conn.lookupByUUIDString(vm_id)

        # 2. More threshold events meanwhile: the test arms the one-shot threshold again (at
        # 1 byte: the guest's next write fires it); each tells the agent how far it wrote.
        for _round in range(3):
            before = vda(rig, vm_id)
            dom.setBlockThreshold(node, 1)
            wait_for(lambda: (d := vda(rig, vm_id))["events"] > before["events"]  # noqa: B023
                     and d["allocation"] > before["allocation"],  # noqa: B023
                     60, 0.1, "the agent to get the next threshold event")

        # 3. The guest reaches the end of the volume and pauses: ENOSPC asks too.
        stats = a.wait_status(rig.d, vm_id, "Paused", timeout=120)
        assert stats["pauseCode"] == "ENOSPC", stats
        wait_for(lambda: thin(rig, vm_id)["enospcPauses"] >= 1, 30, 0.1,
                 "the agent to see the ENOSPC pause")

        # Five requests and more (the slow checks ran meanwhile too), one extension in
        # flight: one job of the VM, one request in the mailbox with one waiter, no job
        # refused as busy, one follow-up due.
        detail = thin(rig, vm_id)
        jobs = [c for c in detail["calls"]["inFlight"] if c["kind"] == "thin-vda"]
        assert len(jobs) == 1, detail["calls"]
        box = inspect(rig, mailbox)
        assert [(p["volUUID"], p["waiters"]) for p in box["pending"]] == [(vol, 1)], box
        assert box["requests"] == 1, box
        drive = detail["drives"]["vda"]
        assert drive["events"] >= first + 3, drive
        assert drive["busy"] and drive["again"], drive  # the follow-up, once it lands
        assert (drive["failures"], drive["lastError"], drive["extensions"]) == (0, "", 0), drive
        assert not events.extensions(vol)

        # 4. An SPM comes: the extension lands, the follow-up after it, the guest resumes.
        rig.spm_start(sp)
        events.drain(lambda: f"{g.MARKER_WRITE_DONE} {mib}" in _text(serial), 200)
        a.wait_status(rig.d, vm_id, "Down")
    sizes = [e["newSize"] for e in events.extensions(vol)]
    assert sizes[0] == 72 * MiB, sizes  # the one request: 64 MiB and one chunk
    assert sizes == sorted(set(sizes)), sizes  # one at a time, each larger
    box = inspect(rig, mailbox)
    assert (box["requests"], box["replies"], box["pending"]) == (1, 1, []), box
    assert "WRITE-FAILED" not in _text(serial)
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)




def test_a_lost_threshold_event_is_caught_by_the_slow_check(
        tmp_path: Path, cleanup: list[Rig], conn: libvirt.virConnect) -> None:
    rig = make_rig(tmp_path, spm=PATIENT_SPM, extra=PATIENT_PROBE, chunk_mib=32,
                   chunk_max_mib=32, adaptive=False)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig, capacity=128 * MiB, initial=64 * MiB)
    vol = volume["volumeID"]
    # 56 MiB in one go, past the threshold (64 MiB less half a chunk: 48 MiB) but short of
    # the end, then nothing more for 10 minutes: no write could fire an event later.
    vm_id, mib = a.new_id(), 56
    serial = a.serial_log(rig.d, vm_id)
    rig.call("VM.create", vmID=vm_id, vmParams=params_of(
        image, volume, mib, chunk=mib, sleep=600, below=GATE_BELOW))
    g.wait_for_marker(serial, g.MARKER_READY, a.BOOT_TIMEOUT)  # at its gate: wrote nothing

    def armed_by_agent() -> dict[str, Any] | None:
        disk: dict[str, Any] = a.status(rig.d, vm_id)["disks"].get("vda", {})
        return disk if disk.get("threshold") == 48 * MiB else None

    wait_for(armed_by_agent, 60, 0.1, "the agent to arm the threshold")
    node = vda(rig, vm_id)["node"]
    dom = conn.lookupByUUIDString(vm_id)
    assert armed(conn, dom) == 48 * MiB
    connected = inspect(rig, "/host/libvirt")["connectedFor"]
    with rig.subscriber(EXTENDED, VM_STATUS) as sub:
        events = Events(sub)
        pid = rig.d.pid
        os.kill(pid, signal.SIGSTOP)  # the agent can neither arm it again nor check meanwhile
        try:
            dom.setBlockThreshold(node, 0)  # the event is lost
            assert armed(conn, dom) is None
            dom.setMemoryFlags(BALLOON, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # open the gate
            g.wait_for_marker(serial, f"{g.MARKER_WRITE_PROGRESS} {mib}", 60,
                              fail_markers=(g.MARKER_WRITE_FAILED, g.MARKER_KERNEL_PANIC))
            _capacity, allocation, physical = dom.blockInfo("vda")
            assert 48 * MiB < allocation < physical == 64 * MiB, (allocation, physical)
            assert armed(conn, dom) is None  # nothing fired, nothing was armed
        finally:
            os.kill(pid, signal.SIGCONT)

        # The slow check reads the allocation and extends: one chunk, no pause.
        events.drain(lambda: bool(events.extensions(vol)), 60)
        disk = wait_for(lambda: extended(rig, vm_id), 30, 0.1, "the VM's stats")
    assert [e["newSize"] for e in events.extensions(vol)] == [96 * MiB], events.seen
    assert (disk["physical"], disk["threshold"]) == (96 * MiB, 80 * MiB), disk
    drive = vda(rig, vm_id)
    assert (drive["events"], drive["missed"]) == (0, 1), drive  # no event: the check found it
    assert inspect(rig, "/host/libvirt")["connectedFor"] > connected  # no reconnect either
    assert "Paused" not in [p["status"] for p in events.statuses(vm_id)]
    assert a.status(rig.d, vm_id)["status"] == "Up"
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)
