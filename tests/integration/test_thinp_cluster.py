"""Thin provisioning on a host that is not the SPM: real vdsmd "hosts" share one loop domain
(tests/storage/spm/cluster.py), host 1 is the SPM, the VM runs on host 3 and its volume is
extended through the storage mailbox. Without an SPM the VM stays paused on ENOSPC, and it is
resumed once another host takes the role, also when host 3's vdsmd was SIGKILLed while the
extension waited in its outbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests import guest as g
from tests.harness import wait_for
from tests.storage.rig import Rig
from tests.storage.spm.cluster import CONFIG, Cluster, new_id
from tests.vm import agent as a
from tests.vm.thin import EXTENDED, VM_STATUS, Events, MiB, check_written, ids, thin_settings
from tests.vm.thin import writer_params as params_of

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt, pytest.mark.root,
              pytest.mark.slow, pytest.mark.xdist_group("spm-cluster")]

VM_HOST = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    made = Cluster(tmp_path, config=CONFIG + a.config(hooks) + thin_settings(
        chunk_mib=8, chunk_max_mib=8, adaptive=False, check_interval=1.0,
        extend_timeout=3.0))
    conn = libvirt.open("qemu:///system")
    try:
        made.start()
        yield made
    finally:
        try:
            for host in made.hosts:
                a.destroy_owned(conn, a.owner(host))
        finally:
            conn.close()
            made.cleanup()


def thin_volume(cluster: Cluster, *, capacity: int = 128 * MiB,
                initial: int = 4 * MiB) -> dict[str, str]:
    sp, sd = cluster.pool("loop")
    assert cluster.spm_start(1)["taskResult"] == "success"
    img, vol = new_id(), new_id()
    task = cluster.call(1, "Volume.create", storagepoolID=sp, storagedomainID=sd,
                        imageID=img, volumeID=vol, size=capacity, volFormat="cow",
                        preallocate="sparse", initialSize=initial)
    assert cluster.task(1, task)["taskResult"] == "success"
    return ids(sp, sd, img, vol)


def watcher(cluster: Cluster, tmp: Path) -> Rig:
    """A rig around the VM's host, for its confirmed event subscriber."""
    rig = Rig(tmp)
    rig.daemon = cluster.host(VM_HOST)
    return rig


def mailbox(cluster: Cluster) -> dict[str, Any]:
    detail: dict[str, Any] = cluster.call(VM_HOST, "Actors.inspect",
                                          path=f"/storage/pools/{cluster.sp}/mailbox")["detail"]
    return detail


def test_a_guest_on_a_host_that_is_not_the_spm_is_extended_through_the_mailbox(
        cluster: Cluster, tmp_path: Path) -> None:
    volume = thin_volume(cluster)
    image = g.build_guest()
    vm_id, mib = new_id(), 48
    host = cluster.host(VM_HOST)
    serial = a.serial_log(host, vm_id)
    with watcher(cluster, tmp_path).subscriber(EXTENDED, VM_STATUS) as sub:
        events = Events(sub)
        host.call("VM.create", vmID=vm_id,
                  vmParams=params_of(image, volume, mib, chunk=2, sleep=0.2))
        events.drain(lambda: f"{g.MARKER_WRITE_DONE} {mib}" in _text(serial), 200)
        a.wait_status(host, vm_id, "Down")
    assert "Paused" not in [p["status"] for p in events.statuses(vm_id)]
    extended = events.extensions(volume["volumeID"])
    assert len(extended) >= 2, extended
    assert all(e["latency"] > 0 for e in extended), extended
    assert mailbox(cluster)["replies"] >= len(extended)  # each went through the mailbox
    assert cluster.spms() == [1]
    assert host.call("VM.destroy", vmID=vm_id) is True
    check_written(host.call, volume, mib)
    cluster.check_journal()


def _paused_waiting(cluster: Cluster, vm_id: str) -> None:
    """The VM ran out of space and its extension waits in host 3's outbox."""
    host = cluster.host(VM_HOST)
    a.wait_status(host, vm_id, "Paused", timeout=120)
    wait_for(lambda: mailbox(cluster)["pending"], 30, 0.1, "the request in the outbox")
    assert a.status(host, vm_id)["pauseCode"] == "ENOSPC"


def test_without_an_spm_the_vm_stays_paused_and_resumes_after_one_comes(
        cluster: Cluster, tmp_path: Path) -> None:
    volume = thin_volume(cluster)
    image = g.build_guest()
    cluster.kill(1)  # no SPM from now on
    vm_id, mib = new_id(), 32
    host = cluster.host(VM_HOST)
    serial = a.serial_log(host, vm_id)
    host.call("VM.create", vmID=vm_id, vmParams=params_of(image, volume, mib, chunk=16))
    _paused_waiting(cluster, vm_id)
    # Several of the extender's waits for the SPM (extend_timeout 3 s) run out meanwhile:
    # the VM stays paused, the request stays queued.
    wait_for(lambda: cluster.call(VM_HOST, "Actors.inspect", path=f"/vms/{vm_id}")
             ["detail"]["thin"]["drives"]["vda"]["failures"] >= 2, 60, 0.2,
             "the extender to wait for the SPM twice")
    assert a.status(host, vm_id)["status"] == "Paused"
    assert f"{g.MARKER_WRITE_DONE}" not in _text(serial)
    cluster.take_over(2, timeout=60)
    g.wait_for_marker(serial, f"{g.MARKER_WRITE_DONE} {mib}", 200,
                      fail_markers=(g.MARKER_KERNEL_PANIC, g.MARKER_WRITE_FAILED))
    a.wait_status(host, vm_id, "Down")
    assert "WRITE-FAILED" not in _text(serial)
    assert host.call("VM.destroy", vmID=vm_id) is True
    check_written(host.call, volume, mib)


def test_a_vdsmd_killed_while_an_extension_waits_still_gets_the_vm_its_room(
        cluster: Cluster) -> None:
    volume = thin_volume(cluster)
    image = g.build_guest()
    cluster.kill(1)
    vm_id, mib = new_id(), 32
    host = cluster.host(VM_HOST)
    serial = a.serial_log(host, vm_id)
    host.call("VM.create", vmID=vm_id, vmParams=params_of(image, volume, mib, chunk=16))
    _paused_waiting(cluster, vm_id)
    cluster.kill(VM_HOST)  # the extension was in flight
    host.start()
    host.wait_ready()
    stats = a.wait_status(host, vm_id, "Paused", timeout=60)  # recovered, still out of room
    assert stats["pauseCode"] == "ENOSPC", stats
    cluster.take_over(2, timeout=60)
    g.wait_for_marker(serial, f"{g.MARKER_WRITE_DONE} {mib}", 200,
                      fail_markers=(g.MARKER_KERNEL_PANIC, g.MARKER_WRITE_FAILED))
    a.wait_status(host, vm_id, "Down")
    assert host.call("VM.destroy", vmID=vm_id) is True
    check_written(host.call, volume, mib)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
