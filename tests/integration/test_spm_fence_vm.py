"""Fencing kills only the SPM's writer: a VM of the fenced host keeps running.

Two real vdsmd hosts share a loop-domain pool on a faultfs mount; host 1 is the SPM and runs
the project's tiny TCG guest, which writes to a thin disk of the pool. Then every lease I/O
of host 1's keeper fails (EIO): the keeper fences its writer and gives the role up. The
guest must keep running (vdsm would restart the whole agent): it is never destroyed, its
QEMU process stays the same, its later extensions go through the mailbox to host 2 once
host 2 is SPM, and every byte it wrote is there afterwards.
"""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from actors.storage.spm import procutil
from tests import guest as g
from tests.faultfs import FaultFSMount
from tests.harness import wait_for
from tests.storage.rig import Rig
from tests.storage.spm.cluster import CONFIG, LEASE, Cluster, new_id
from tests.vm import agent as a
from tests.vm.thin import EXTENDED, VM_STATUS, Events, MiB, check_written, ids, thin_settings
from tests.vm.thin import writer_params as params_of

pytestmark = [pytest.mark.timeout(400), pytest.mark.libvirt, pytest.mark.root,
              pytest.mark.slow, pytest.mark.xdist_group("spm-cluster")]


def _qemu_pid(conn: libvirt.virConnect, vm_id: str) -> int:
    return a.qemu_pid(conn.lookupByUUIDString(vm_id).name())


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_a_fenced_spm_keeps_its_vms_running(tmp_path: Path, faultfs: FaultFSMount) -> None:
    image = g.build_guest()
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    conn = libvirt.open("qemu:///system")
    made = Cluster(tmp_path, hosts=2, shared=faultfs.mountpoint,
                   config=CONFIG + a.config(hooks) + thin_settings(
                       chunk_mib=4, chunk_max_mib=4, adaptive=False,
                       check_interval=1.0, extend_timeout=3.0))
    try:
        made.start()
        sp, sd = made.pool("loop")
        assert made.spm_start(1)["taskResult"] == "success"
        img, vol = new_id(), new_id()
        task = made.call(1, "Volume.create", storagepoolID=sp, storagedomainID=sd,
                         imageID=img, volumeID=vol, size=128 * MiB, volFormat="cow",
                         preallocate="sparse", initialSize=4 * MiB)
        assert made.task(1, task)["taskResult"] == "success"
        volume = ids(sp, sd, img, vol)
        host = made.host(1)
        vm_id, mib = new_id(), 40
        serial = a.serial_log(host, vm_id)
        watcher = Rig(tmp_path)
        watcher.daemon = host
        with watcher.subscriber(EXTENDED, VM_STATUS) as sub:
            events = Events(sub)
            host.call("VM.create", vmID=vm_id,
                      vmParams=params_of(image, volume, mib, chunk=2, sleep=0.4))
            g.wait_for_marker(serial, g.MARKER_WRITE_PROGRESS, a.BOOT_TIMEOUT)
            qemu = _qemu_pid(conn, vm_id)
            writer, keeper = made.writer_pid(1), made.keeper_pid(1)
            faultfs.control.eio("*/dom_md/ids", "any", pid=keeper)  # host 1 is fenced
            wait_for(lambda: procutil.start_time(writer) is None, LEASE + 10,
                     what="host 1 to fence its writer")
            wait_for(lambda: made.spm_status(1)["spmStatus"] == "Free", 10,
                     what="host 1 to report it lost the role")
            assert a.status(host, vm_id)["status"] in ("Up", "Paused")
            assert _qemu_pid(conn, vm_id) == qemu
            made.take_over(2, timeout=60)
            events.drain(lambda: f"{g.MARKER_WRITE_DONE} {mib}" in _text(serial), 240)
            # never destroyed nor restarted until the guest powers itself off
            statuses = [p["status"] for p in events.statuses(vm_id)]
            assert "Down" not in statuses, statuses
            assert _qemu_pid(conn, vm_id) == qemu
            a.wait_status(host, vm_id, "Down")
        assert g.MARKER_WRITE_FAILED not in _text(serial)
        mailbox = made.call(1, "Actors.inspect", path=f"/storage/pools/{sp}/mailbox")
        assert mailbox["detail"]["replies"] >= 1  # extended by host 2 after the fence
        assert made.keeper_pid(1) == keeper and host.proc is not None \
            and host.proc.poll() is None
        assert host.call("VM.destroy", vmID=vm_id) is True
        faultfs.control.clear()
        check_written(host.call, volume, mib)
        made.check_journal()
    finally:
        faultfs.control.clear()
        try:
            a.destroy_owned(conn, a.owner(made.host(1)))
        finally:
            conn.close()
            made.cleanup()
