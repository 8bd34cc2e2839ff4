"""A real guest on a volume of a real storage domain, end to end through vdsmd's API.

Storage is connected, a domain and pool are created, a volume is created as a task; a VM
whose drive is named by pool/domain/image/volume boots, writes to it with O_DIRECT and
powers off; the data is in the volume, and the VM's teardown released the volume's loop
devices.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.storage.helpers import loop_devices_of
from tests.storage.rig import Rig, new_id
from tests.vm import agent as a
from tests.vm.test_api_lifecycle import wait_job

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt, pytest.mark.root]

WRITE_MIB = 16


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    config = a.config(hooks) + "[storage]\nmonitor_interval = 1\nmonitor_timeout = 2\n"
    rig = Rig(tmp_path, config=config)
    conn = libvirt.open("qemu:///system")
    try:
        yield rig
    finally:
        try:
            if rig.daemon is not None:
                a.destroy_owned(conn, a.owner(rig.daemon))
        finally:
            conn.close()
            rig.cleanup()


def allocated_bytes(path: str) -> int:
    """Bytes of guest data the qcow2 at ``path`` holds (from qemu-img map)."""
    out = subprocess.run(["qemu-img", "map", "--output=json", "-U", path], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return sum(e["length"] for e in json.loads(out) if e.get("data"))


@pytest.mark.parametrize("kind", ["loop", "localfs"])
def test_guest_writes_to_a_pool_volume(rig: Rig, tmp_path: Path, kind: str) -> None:
    image = g.build_guest()
    rig.start().wait_ready()
    base = rig.local_dir("storage")
    sd = rig.domain(kind, str(base))
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    img, vol, task = rig.create_volume(sp, sd, size=128 << 20, fmt="cow")
    assert rig.task(task)["taskResult"] == "success"
    ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}

    vm_id = a.new_id()
    drive: dict[str, Any] = {"poolID": sp, "domainID": sd, "imageID": img,
                             "volumeID": vol, "format": "cow", "iface": "virtio"}
    params = a.guest_params(image, "write", drives=[drive])
    params["kernelArgs"] = g.kernel_cmdline("write", mib=WRITE_MIB, fill="ones")
    assert rig.call("VM.create", vmID=vm_id, vmParams=params)["vmID"] == vm_id
    g.wait_for_marker(a.serial_log(rig.d, vm_id), f"VDSM-GUEST WRITE-DONE {WRITE_MIB}",
                      timeout=a.BOOT_TIMEOUT)
    down = a.wait_status(rig.d, vm_id, "Down")
    assert down.get("exitReason") in ("shutdown", "poweroff", "guest-shutdown",
                                      "shutdown by guest", None) or "exitReason" in down
    assert rig.call("VM.destroy", vmID=vm_id) is True
    if kind == "loop":
        # the VM's teardown detached the volume's loop devices
        assert loop_devices_of(tmp_path) == []

    prepared = rig.call("Image.prepare", **ids)
    try:
        assert allocated_bytes(prepared["path"]) >= WRITE_MIB << 20
        info = rig.call("Volume.getInfo", **ids)
        assert info["format"].lower() == "cow"
        assert info["legality"].upper() == "LEGAL"
    finally:
        assert rig.call("Image.teardown", storagepoolID=sp, storagedomainID=sd,
                        imageID=img, volumeID=vol) is True


def test_a_vm_on_a_missing_volume_fails_cleanly(rig: Rig) -> None:
    image = g.build_guest()
    rig.start().wait_ready()
    base = rig.local_dir("storage")
    sd = rig.domain("localfs", str(base))
    sp = rig.pool(sd)
    vm_id = a.new_id()
    drive = {"poolID": sp, "domainID": sd, "imageID": new_id(), "volumeID": new_id(),
             "format": "cow"}
    error = rig.error("VM.create", vmID=vm_id, vmParams=a.guest_params(image, drives=[drive]))
    assert 200 <= error.code < 300, error
    assert "no such" in error.message.lower()
    assert not any(p.endswith(vm_id) for p in a.vm_actors(rig.d))
    assert all(v["vmID"] != vm_id for v in rig.call("Host.getVMList"))


@pytest.mark.parametrize("kind", ["loop", "localfs"])
def test_a_volume_a_running_vm_uses_is_not_deleted(rig: Rig, kind: str) -> None:
    """Deleting a running VM's volume (or its image) is refused, also after a client's
    teardown and across a restart of vdsmd (the VM keeps running); after VM.destroy it goes."""
    image = g.build_guest()
    rig.start().wait_ready()
    base = rig.local_dir("storage")
    sd = rig.domain(kind, str(base))
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    img, vol, task = rig.create_volume(sp, sd, size=64 << 20, fmt="cow")
    assert rig.task(task)["taskResult"] == "success"
    image_ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img}
    ids = {**image_ids, "volumeID": vol}
    volume_file = base / sd / "images" / img / vol
    vm_id = a.new_id()
    drive = {"poolID": sp, "domainID": sd, "imageID": img, "volumeID": vol, "format": "cow",
             "iface": "virtio"}
    assert rig.call("VM.create", vmID=vm_id,
                    vmParams=a.guest_params(image, "idle", drives=[drive]))["vmID"] == vm_id
    a.wait_status(rig.d, vm_id, "Up")

    def refused() -> None:
        error = rig.error("Volume.delete", **ids)
        assert error.code == 218 and f"vm-{vm_id}" in error.message, error
        error = rig.error("Image.delete", **image_ids)
        assert error.code == 223 and vol in error.message, error
        assert volume_file.is_file()
        assert a.status(rig.d, vm_id)["status"] == "Up"

    refused()
    rig.call("Image.prepare", **ids)  # a client's teardown never releases the VM's use
    assert rig.call("Image.teardown", **image_ids) is True
    refused()
    rig.stop()  # the VM keeps running while vdsmd restarts, and its volume stays in use
    rig.start().wait_ready()
    a.wait_status(rig.d, vm_id, "Up")
    refused()
    assert rig.call("VM.destroy", vmID=vm_id) is True
    assert rig.task(rig.call("Volume.delete", **ids))["taskResult"] == "success"
    assert not volume_file.exists()
    if kind == "loop":
        assert loop_devices_of(rig.tmp) == []


@pytest.mark.parametrize("kind", ["loop", "localfs"])
def test_hibernate_to_a_volume_and_restore_from_it(rig: Rig, kind: str) -> None:
    """vdsm's way: the memory image goes to a storage volume named by its handle
    (sdUUID,spUUID,imgUUID,volUUID), prepared for the save and the restore only; a volume
    that is a VM's drive is refused."""
    image = g.build_guest()
    rig.start().wait_ready()
    sd = rig.domain(kind, str(rig.local_dir("storage")))
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    disk_img, disk_vol, task = rig.create_volume(sp, sd, size=64 << 20, fmt="cow")
    assert rig.task(task)["taskResult"] == "success"
    mem_img, mem_vol, task = rig.create_volume(
        sp, sd, size=256 << 20, fmt="raw",
        prealloc="preallocated" if kind == "loop" else "sparse")
    assert rig.task(task)["taskResult"] == "success"
    handle = f"{sd},{sp},{mem_img},{mem_vol}"
    disk = {"poolID": sp, "domainID": sd, "imageID": disk_img, "volumeID": disk_vol,
            "format": "cow"}
    vm_id, params = a.new_id(), a.guest_params(image, drives=[disk], display="vnc")
    rig.call("VM.create", vmID=vm_id, vmParams=params)
    serial = a.serial_log(rig.d, vm_id)
    g.wait_for_marker(serial, g.MARKER_READY, a.BOOT_TIMEOUT)
    # Over the VM's own disk: refused, nothing happens to the VM.
    own_disk = f"{sd},{sp},{disk_img},{disk_vol}"
    e = rig.error("VM.hibernate", vmID=vm_id, hiberVolHandle=own_disk)
    assert e.code == 218 and disk_vol in e.message
    assert a.wait_status(rig.d, vm_id, "Up")

    saving = a.new_id()
    assert rig.call("VM.hibernate", vmID=vm_id, hiberVolHandle=handle, jobID=saving) is True
    saved = wait_job(rig.d, saving)
    assert saved["status"] == "done", saved  # a job: it answered at once
    assert a.status(rig.d, vm_id)["exitReason"] == "saved"
    assert rig.call("VM.destroy", vmID=vm_id) is True
    if kind == "loop":
        assert loop_devices_of(rig.tmp / "storage") == []  # every volume torn down again
    restoring = a.new_id()
    restored = rig.call("VM.create", vmID=vm_id, jobID=restoring,
                        vmParams={**params, "restoreState": handle})
    assert restored["vmID"] == vm_id
    restore = wait_job(rig.d, restoring)
    assert restore["status"] == "done", restore
    a.wait_status(rig.d, vm_id, "Up")
    rig.call("VM.shutdown", vmID=vm_id, delay=120)  # the same guest, still running: it
    a.wait_status(rig.d, vm_id, "Down")             # obeys the power button, no new boot
    assert g.MARKER_ACPI_SHUTDOWN in serial.read_text()
    assert serial.read_text().count(g.MARKER_BOOTED) == 1
    assert rig.call("VM.destroy", vmID=vm_id) is True
