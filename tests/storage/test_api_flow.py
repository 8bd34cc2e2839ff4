"""Connections, domains, the pool, volumes and images through the real API of a real vdsmd."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from actors.storage.sd.lvmdomain import LvmDomain
from tests.harness import next_event, wait_for
from tests.storage.helpers import is_mounted, loop_devices_of, sh
from tests.storage.rig import Rig, ext4_device, new_id
from tests.storage.test_lvm import NO_DM, volume_group

MiB = 1 << 20


def qemu_chain(path: str) -> list[dict[str, object]]:
    out = sh("qemu-img", "info", "-U", "--output", "json", "--backing-chain", path)
    chain: list[dict[str, object]] = json.loads(out)
    return chain


@pytest.mark.timeout(180)
def test_file_domains_pool_volumes_and_images(rig: Rig) -> None:
    rig.start()
    sd_a = rig.domain("localfs", str(rig.local_dir("a")), "a")
    dir_b = rig.local_dir("b")
    sd_b = rig.domain("localfs", str(dir_b), "b")
    info = rig.call("StorageDomain.getInfo", storagedomainID=sd_b)
    assert (info["uuid"], info["name"], info["type"], info["class"]) == (sd_b, "b", "localfs",
                                                                          "data")
    assert info["remotePath"] == str(dir_b)
    assert info["pool"] == []
    assert (dir_b / sd_b / "dom_md" / "metadata").is_file()

    with rig.subscriber("|storage|domain_status|", "|jobs|status|") as sub:
        sp = rig.pool(sd_a)
        _topic, event = next_event(sub, lambda _t, p: p.get("sdUUID") == sd_a, timeout=20)
        assert event["valid"] is True
        assert rig.call("StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd_a,
                        masterVersion=1) is True  # already connected: nothing to do
        entry = rig.wait_valid(sd_a)
        assert (entry["code"], entry["version"], entry["acquired"]) == (0, 5, False)
        assert entry["delay"] >= 0

        task = rig.call("StorageDomain.attach", storagedomainID=sd_b, storagepoolID=sp)
        assert rig.task(task)["taskResult"] == "success"
        _topic, event = next_event(
            sub, lambda _t, p: p.get("taskID") == task and p["taskState"] == "finished", 10)
        assert event["taskResult"] == "success"
    pool = rig.call("StoragePool.getInfo", storagepoolID=sp)
    assert pool["info"]["master_uuid"] == sd_a
    assert pool["info"]["master_ver"] == 1
    assert {sd: v["status"] for sd, v in pool["dominfo"].items()} == {sd_a: "Active",
                                                                      sd_b: "Attached"}
    assert sd_b not in rig.repo_stats()
    assert rig.call("StorageDomain.getInfo", storagedomainID=sd_b)["pool"] == [sp]
    assert rig.call("StorageDomain.activate", storagedomainID=sd_b, storagepoolID=sp) is True
    rig.wait_valid(sd_b)
    stats = rig.call("StorageDomain.getStats", storagedomainID=sd_b)
    assert stats["disktotal"] > stats["diskfree"] > 0
    assert stats["monitored"] is True and stats["valid"] is True

    # a base volume and a snapshot of it
    img, base, task = rig.create_volume(sp, sd_b, size=64 * MiB, desc="base")
    assert rig.task(task)["taskResult"] == "success"
    _img, top, task = rig.create_volume(sp, sd_b, size=64 * MiB, img=img, srcImgUUID=img,
                                        srcVolUUID=base)
    assert rig.task(task)["taskResult"] == "success"
    ids = {"storagepoolID": sp, "storagedomainID": sd_b, "imageID": img}
    top_info = rig.call("Volume.getInfo", volumeID=top, **ids)
    assert (top_info["format"], top_info["legality"], top_info["voltype"]) == ("COW", "LEGAL",
                                                                               "LEAF")
    assert top_info["parent"] == base
    assert top_info["capacity"] == 64 * MiB
    base_info = rig.call("Volume.getInfo", volumeID=base, **ids)
    assert (base_info["voltype"], base_info["description"]) == ("INTERNAL", "base")

    prepared = rig.call("Image.prepare", volumeID=top, **ids)
    assert prepared["path"] == str(rig.mount_point(str(dir_b)) / sd_b / "images" / img / top)
    assert Path(prepared["path"]).resolve() == dir_b / sd_b / "images" / img / top
    assert prepared["volType"] == "file"
    assert [layer["volumeID"] for layer in prepared["chain"]] == [top, base]
    chain = qemu_chain(prepared["path"])
    assert [Path(str(c["filename"])).name for c in chain] == [top, base]
    assert rig.call("Image.teardown", volumeID=top, **ids) is True

    # the parent cannot go first; the snapshot can, and the parent is a leaf again
    error = rig.error("Volume.delete", volumeID=base, **ids)
    assert error.code == 217 and top in error.message
    assert rig.task(rig.call("Volume.delete", volumeID=top, **ids))["taskResult"] == "success"
    assert rig.call("Volume.getInfo", volumeID=base, **ids)["voltype"] == "LEAF"
    assert rig.task(rig.call("Image.delete", **ids))["taskResult"] == "success"
    assert rig.error("Volume.getInfo", volumeID=base, **ids).code == 203
    assert not (dir_b / sd_b / "images" / img).exists()

    # deactivate and detach
    assert rig.call("StorageDomain.deactivate", storagedomainID=sd_b, storagepoolID=sp) is True
    assert sd_b not in rig.repo_stats()
    task = rig.call("StorageDomain.detach", storagedomainID=sd_b, storagepoolID=sp)
    assert rig.task(task)["taskResult"] == "success"
    assert rig.call("StorageDomain.getInfo", storagedomainID=sd_b)["pool"] == []
    tasks = rig.call("Host.getAllTasksStatuses")
    assert len(tasks) == 6 and tasks[task]["taskState"] == "finished"
    assert rig.call("Task.clear", taskID=task) is True

    # a restarted vdsmd reconnects its pool from the state dir and still knows its tasks
    rig.stop()
    rig.start()
    wait_for(lambda: rig.repo_stats().get(sd_a, {}).get("valid"), 20, what="pool reconnected")
    assert rig.call("StoragePool.getInfo", storagepoolID=sp)["info"]["master_uuid"] == sd_a
    assert len(rig.call("Host.getAllTasksStatuses")) == 5
    assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
    assert rig.repo_stats() == {}
    assert rig.error("StoragePool.getInfo", storagepoolID=sp).code == 202
    result = rig.call("StoragePool.disconnectStorageServer", storagepoolID=sp,
                      domainType="localfs", connectionParams=[{"id": "b", "connection":
                                                               str(dir_b)}])
    assert result == [{"id": "b", "status": 0}]
    assert not rig.mount_point(str(dir_b)).exists()


@pytest.mark.timeout(120)
def test_loop_domain_volumes_are_block_devices_with_their_chain(rig: Rig) -> None:
    rig.start()
    data = rig.local_dir("loop")
    sd = rig.domain("loop", str(data), "blocks")
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    img, base, task = rig.create_volume(sp, sd, size=1 << 30, initialSize=32 * MiB)
    assert rig.task(task)["taskResult"] == "success"
    ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img}
    info = rig.call("Volume.getInfo", volumeID=base, **ids)
    assert info["capacity"] == 1 << 30
    assert info["apparentsize"] == 32 * MiB  # a thin block volume: its allocation
    _img, top, task = rig.create_volume(sp, sd, size=1 << 30, img=img, srcVolUUID=base,
                                        initialSize=32 * MiB)
    assert rig.task(task)["taskResult"] == "success"

    prepared = rig.call("Image.prepare", volumeID=top, **ids)
    link = Path(prepared["path"])
    assert link.is_symlink()
    assert stat.S_ISBLK(link.stat().st_mode)
    assert prepared["device"] == str(link.readlink())
    assert prepared["volType"] == "block"
    chain = qemu_chain(str(link))  # the parent resolves through its own link
    assert [Path(str(c["filename"])).name for c in chain] == [top, base]
    assert len(loop_devices_of(rig.tmp)) == 2
    assert rig.call("Image.prepare", volumeID=top, **ids)["device"] == prepared["device"]
    assert rig.call("Image.teardown", **ids) is True
    wait_for(lambda: loop_devices_of(rig.tmp) == [], 10, what="loop devices detached")
    assert not link.exists()

    error = rig.error("Volume.create", volumeID=new_id(), size=MiB, volFormat="raw",
                      preallocate="sparse", **ids)
    assert error.code == -32602  # a block domain cannot hold a sparse raw volume
    assert "preallocate" in error.message


@pytest.mark.timeout(120)
def test_posixfs_and_nfs_connections(rig: Rig) -> None:
    rig.start()
    device = ext4_device(rig.tmp, "posix", 32 * MiB)
    params = [{"id": "p", "connection": device, "vfs_type": "ext4",
               "mnt_options": "noatime"}]
    result = rig.call("StoragePool.connectStorageServer", storagepoolID=new_id(),
                      domainType="posixfs", connectionParams=params)
    assert result == [{"id": "p", "status": 0}]
    mountpoint = rig.mount_point(device)
    assert is_mounted(mountpoint)
    sd = rig.domain("posixfs", device, "posix")
    assert (mountpoint / sd / "dom_md" / "metadata").is_file()

    # nfs: the command runs (soft, timeo, retrans) and fails cleanly: no server here
    nfs = [{"id": "n", "connection": "127.0.0.1:/nothing", "nfs_version": "4.2",
            "nfs_timeo": 10, "nfs_retrans": 1, "mnt_options": "retry=0"}]
    result = rig.call("StoragePool.connectStorageServer", storagepoolID=new_id(),
                      domainType="nfs", connectionParams=nfs)
    assert result[0]["status"] == 210
    assert "127.0.0.1:/nothing" in result[0]["message"]
    assert not rig.mount_point("127.0.0.1:/nothing").exists()
    result = rig.call("StoragePool.connectStorageServer", storagepoolID=new_id(),
                      domainType="iscsi", connectionParams=[{"id": "i", "connection": "x"}])
    assert result[0]["status"] == 221

    # a host that lost its mounts (a reboot) gets them back when vdsmd starts
    rig.stop()
    sh("umount", str(mountpoint))
    rig.start()
    wait_for(lambda: is_mounted(mountpoint), 20, what="the mount restored")
    assert rig.call("StorageDomain.getInfo", storagedomainID=sd)["name"] == "posix"

    result = rig.call("StoragePool.disconnectStorageServer", storagepoolID=new_id(),
                      domainType="posixfs", connectionParams=params)
    assert result == [{"id": "p", "status": 0}]
    assert not is_mounted(mountpoint)
    assert not mountpoint.exists()
    assert rig.error("StorageDomain.getInfo", storagedomainID=sd).code == 201


@pytest.mark.timeout(120)
def test_lvm_block_domain_through_the_api(rig: Rig) -> None:
    """An LVM domain (iscsi/fcp) behind the same verbs, as far as this kernel allows: no
    device-mapper here, so its LVs cannot be activated (prepare and the monitor's read of
    the metadata LV fail clearly) while metadata, raw volumes and tags work. The pool's master
    is a file domain: an LVM master's lease areas are LVs, which cannot be activated here
    either (that pool gets a clear reason instead of an SPM)."""
    rig.start()
    with volume_group(rig.tmp, size=4 << 30) as (lvm, vg):
        sd = rig.domain("iscsi", vg, "block")
        info = rig.call("StorageDomain.getInfo", storagedomainID=sd)
        assert (info["type"], info["remotePath"], info["name"]) == ("iscsi", vg, "block")
        assert rig.call("StorageDomain.getStats", storagedomainID=sd)["disktotal"] > 1 << 30
        master = rig.domain("localfs", str(rig.local_dir("master")), "master")
        sp = rig.pool(master, others=(sd,))
        img, vol, task = rig.create_volume(sp, sd, size=64 * MiB, fmt="raw",
                                           prealloc="preallocated")
        assert rig.task(task)["taskResult"] == "success"
        ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}
        info = rig.call("Volume.getInfo", **ids)
        assert (info["format"], info["legality"], info["capacity"]) == ("RAW", "LEGAL",
                                                                        64 * MiB)
        if NO_DM:
            error = rig.error("Image.prepare", **ids)
            assert "device-mapper" in error.message
            entry = rig.wait_valid(sd, valid=False)
            assert entry["code"] == 208  # the metadata LV cannot be read without activation
        assert rig.task(rig.call("Image.delete", storagepoolID=sp, storagedomainID=sd,
                                 imageID=img))["taskResult"] == "success"
        assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
        LvmDomain(vg, sd, lvm=lvm, run_dir=rig.tmp / "links").remove()


@pytest.mark.skipif(not NO_DM, reason="with device-mapper an LVM master's areas can be used")
def test_an_lvm_master_gets_a_clear_reason_instead_of_an_spm(rig: Rig) -> None:
    """Without device-mapper an LVM master's lease areas (LVs) cannot be activated: spmStart
    fails saying so, and nothing is written."""
    rig.start()
    with volume_group(rig.tmp, size=4 << 30) as (lvm, vg):
        sd = rig.domain("iscsi", vg, "block")
        sp = new_id()
        assert rig.call("StoragePool.create", storagepoolID=sp, name="lvm", masterSdUUID=sd,
                        masterVersion=1, domainList=[sd]) is True
        assert rig.call("StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=sd,
                        masterVersion=1) is True
        status = rig.task(rig.call("StoragePool.spmStart", storagepoolID=sp))
        assert status["taskResult"] == "failure"
        assert "cannot be activated" in status["message"], status
        assert rig.call("StoragePool.getSpmStatus", storagepoolID=sp)["spmStatus"] == "Free"
        assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
        LvmDomain(vg, sd, lvm=lvm, run_dir=rig.tmp / "links").remove()
