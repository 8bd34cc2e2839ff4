"""Thin provisioning end to end: a real guest writes with O_DIRECT to a thin volume of a loop
domain on this host (the SPM), and keeps running.

The volume starts at 16 MiB; vdsmd watches the qcow2's highest write offset with a libvirt
block threshold and has its writer extend the volume before the guest reaches the end. A
guest that does reach the end pauses (ENOSPC) and is resumed once the extension lands. The
data the guest wrote is read back on the host afterwards, every byte of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.faultfs.mounting import FaultFSMount
from tests.harness import wait_for
from tests.storage.rig import Rig
from tests.vm import agent as a
from tests.vm.thin import EXTENDED, VM_STATUS, Events, MiB, check_written, ids, thin_settings
from tests.vm.thin import writer_params as params_of

pytestmark = [pytest.mark.timeout(240), pytest.mark.libvirt, pytest.mark.root]

STORAGE = "[storage]\nmonitor_interval = 1\nmonitor_timeout = 2\n"


def make_rig(tmp_path: Path, **thin: Any) -> Rig:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    from tests.storage.rig import SPM_CONFIG
    return Rig(tmp_path, config=a.config(hooks) + SPM_CONFIG + STORAGE
               + thin_settings(check_interval=1.0, **thin))


@pytest.fixture
def cleanup() -> Iterator[list[Rig]]:
    rigs: list[Rig] = []
    conn = libvirt.open("qemu:///system")
    try:
        yield rigs
    finally:
        try:
            for rig in rigs:
                if rig.daemon is not None:
                    a.destroy_owned(conn, a.owner(rig.daemon))
        finally:
            conn.close()
            for rig in rigs:
                rig.cleanup()


def thin_volume(rig: Rig, *, capacity: int = 256 * MiB,
                initial: int = 16 * MiB) -> dict[str, str]:
    """A loop domain, a pool this vdsmd is the SPM of, and a thin volume in it."""
    sd = rig.domain("loop", str(rig.local_dir("storage")))
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    img, vol, task = rig.create_volume(sp, sd, size=capacity, fmt="cow",
                                       initialSize=initial)
    assert rig.task(task)["taskResult"] == "success"
    return ids(sp, sd, img, vol)


def test_a_moderate_writer_never_pauses(tmp_path: Path, cleanup: list[Rig]) -> None:
    rig = make_rig(tmp_path, chunk_mib=16, chunk_max_mib=64)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig)
    mib = 96
    vm_id = a.new_id()
    serial = a.serial_log(rig.d, vm_id)
    with rig.subscriber(EXTENDED, VM_STATUS) as sub:
        events = Events(sub)
        rig.call("VM.create", vmID=vm_id,
                 vmParams=params_of(image, volume, mib, chunk=4, sleep=0.1))
        events.drain(lambda: f"{g.MARKER_WRITE_DONE} {mib}" in _text(serial), 180)
        a.wait_status(rig.d, vm_id, "Down")
        events.drain(lambda: bool(events.statuses(vm_id)) and
                     events.statuses(vm_id)[-1]["status"] == "Down", 30)
    statuses = [p["status"] for p in events.statuses(vm_id)]
    assert "Paused" not in statuses, statuses
    extended = events.extensions(volume["volumeID"])
    assert len(extended) >= 2, extended
    assert all(e["latency"] > 0 and e["newSize"] > 16 * MiB for e in extended), extended
    assert {e["sdUUID"] for e in extended} == {volume["storagedomainID"]}
    sizes = [e["newSize"] for e in extended]
    assert sizes == sorted(sizes) and sizes[-1] >= mib * MiB, sizes
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)


def test_thin_drive_shows_its_sizes_in_stats_and_inspect(tmp_path: Path,
                                                        cleanup: list[Rig]) -> None:
    rig = make_rig(tmp_path, chunk_mib=8, chunk_max_mib=8, adaptive=False)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig)
    vm_id = a.new_id()
    params = a.guest_params(image, "idle", drives=[
        {"poolID": volume["storagepoolID"], "domainID": volume["storagedomainID"],
         "imageID": volume["imageID"], "volumeID": volume["volumeID"], "format": "cow",
         "iface": "virtio", "thresholdMiB": 6}])
    rig.call("VM.create", vmID=vm_id, vmParams=params)
    g.wait_for_marker(a.serial_log(rig.d, vm_id), g.MARKER_READY, a.BOOT_TIMEOUT)

    def disk() -> dict[str, Any] | None:
        vda: dict[str, Any] = a.status(rig.d, vm_id)["disks"].get("vda", {})
        return vda if "threshold" in vda else None

    vda = wait_for(disk, 30, 0.1, "the thin drive's stats")
    assert vda["physical"] == 16 * MiB
    assert vda["threshold"] == 10 * MiB  # thresholdMiB (6) is more than half a chunk (4)
    assert vda["extensions"] == 0
    detail = rig.call("Actors.inspect", path=f"/vms/{vm_id}")["detail"]["thin"]
    drive = detail["drives"]["vda"]
    assert drive["node"].startswith("vda[") and drive["volumeID"] == volume["volumeID"]
    assert (drive["physical"], drive["threshold"], drive["extensions"]) == (16 * MiB,
                                                                            10 * MiB, 0)
    assert drive["limit"] > 256 * MiB and drive["capacity"] == 256 * MiB
    assert rig.call("VM.destroy", vmID=vm_id) is True


def test_a_fast_writer_pauses_on_enospc_and_is_resumed(tmp_path: Path,
                                                      cleanup: list[Rig]) -> None:
    """A 1 MiB chunk cannot keep up with a guest writing 16 MiB per request: it runs out of
    space, pauses, gets its extension and is resumed, again and again, and finishes."""
    rig = make_rig(tmp_path, chunk_mib=1, chunk_max_mib=1, adaptive=False)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig, capacity=128 * MiB, initial=4 * MiB)
    mib = 48
    vm_id = a.new_id()
    serial = a.serial_log(rig.d, vm_id)
    with rig.subscriber(EXTENDED, VM_STATUS) as sub:
        events = Events(sub)
        rig.call("VM.create", vmID=vm_id, vmParams=params_of(image, volume, mib, chunk=16))
        events.drain(lambda: f"{g.MARKER_WRITE_DONE} {mib}" in _text(serial), 200)
        a.wait_status(rig.d, vm_id, "Down")
    assert events.enospc_pauses(vm_id) >= 1, events.statuses(vm_id)
    detail_ok = "WRITE-FAILED" not in _text(serial)
    assert detail_ok
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)


def test_the_chunk_grows_with_the_write_rate(tmp_path: Path, cleanup: list[Rig]) -> None:
    """An adaptive chunk holds ``headroom`` seconds of the drive's measured rate: with 60 s
    any guest writing faster than about 1 MiB/s earns the most (64 MiB) once two samples
    (the first check's, a threshold event's) measured its rate, instead of the least
    (8 MiB, which a fixed chunk would add each time)."""
    rig = make_rig(tmp_path, chunk_mib=8, chunk_max_mib=64, adaptive=True, headroom=60.0)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    volume = thin_volume(rig, initial=16 * MiB)
    mib = 96
    vm_id = a.new_id()
    serial = a.serial_log(rig.d, vm_id)
    with rig.subscriber(EXTENDED) as sub:
        events = Events(sub)
        rig.call("VM.create", vmID=vm_id, vmParams=params_of(image, volume, mib, chunk=4))
        events.drain(lambda: f"{g.MARKER_WRITE_DONE} {mib}" in _text(serial), 200)
        a.wait_status(rig.d, vm_id, "Down")
    sizes = [16 * MiB] + [e["newSize"] for e in events.extensions(volume["volumeID"])]
    steps = [hi - lo for lo, hi in itertools.pairwise(sizes)]
    assert steps and max(steps) >= 60 * MiB, steps  # the rate's chunk, capped at the most
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.mark.timeout(300)
def test_a_vm_paused_on_eio_resumes_once_its_domain_is_valid_again(
        tmp_path: Path, faultfs: FaultFSMount, cleanup: list[Rig]) -> None:
    """faultfs makes the domain's metadata reads and the volume's writes fail with EIO: the
    monitor marks the domain invalid, the guest pauses (EIO); the faults go, the domain turns
    valid and the VM is resumed without anyone asking, and finishes its writes."""
    mnt, control, _src = faultfs
    rig = make_rig(tmp_path)
    cleanup.append(rig)
    image = g.build_guest()
    rig.start().wait_ready()
    path = mnt / "dom"
    path.mkdir()
    rig.connect("localfs", str(path))
    sd = rig.domain("localfs", str(path), "faulty")
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    img, vol, task = rig.create_volume(sp, sd, size=64 * MiB, fmt="cow")
    assert rig.task(task)["taskResult"] == "success"
    volume = ids(sp, sd, img, vol)
    mib = 32
    vm_id = a.new_id()
    serial = a.serial_log(rig.d, vm_id)
    rig.call("VM.create", vmID=vm_id,
             vmParams=params_of(image, volume, mib, chunk=1, sleep=0.3))
    g.wait_for_marker(serial, g.MARKER_WRITE_PROGRESS, a.BOOT_TIMEOUT)
    try:
        control.eio("*/dom_md/metadata", "read")
        control.eio(f"*/images/{img}/{vol}", "write")
        stats = a.wait_status(rig.d, vm_id, "Paused", timeout=60)
        assert stats["pauseCode"] == "EIO", stats
        rig.wait_valid(sd, False, timeout=30)
        assert a.status(rig.d, vm_id)["status"] == "Paused"  # nothing resumes it yet
    finally:
        control.clear()
    rig.wait_valid(sd, timeout=30)
    g.wait_for_marker(serial, f"{g.MARKER_WRITE_DONE} {mib}", 200,
                      fail_markers=(g.MARKER_KERNEL_PANIC, g.MARKER_WRITE_FAILED))
    a.wait_status(rig.d, vm_id, "Down")
    detail = rig.call("Actors.inspect", path=f"/vms/{vm_id}")["detail"]["thin"]
    assert detail["resumes"] >= 1, detail
    assert rig.call("VM.destroy", vmID=vm_id) is True
    check_written(rig.call, volume, mib)
