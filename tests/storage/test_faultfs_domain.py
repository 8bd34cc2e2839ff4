"""A real vdsmd whose storage domain lives on faultfs: I/O errors and hangs, by file.

The domain monitor's probe is an O_DIRECT read of ``dom_md/metadata`` and an O_DIRECT write
of ``dom_md/probe`` (``actors/storage/probe.py``); faultfs makes exactly those fail or hang,
through the kernel, while every other file of the domain works.
"""

from __future__ import annotations

import pytest

from tests.faultfs.mounting import FaultFSMount
from tests.storage.rig import Rig

INTERVAL, TIMEOUT = 1.0, 2.0  # the rig's monitor_interval and monitor_timeout


@pytest.mark.timeout(180)
def test_metadata_faults_make_the_domain_invalid_until_cleared(faultfs: FaultFSMount,
                                                               rig: Rig) -> None:
    mnt, control, _src = faultfs
    rig.start()
    path = mnt / "dom"
    path.mkdir()
    rig.connect("localfs", str(path))
    sd = rig.domain("localfs", str(path), "faulty")
    sp = rig.pool(sd)
    rig.wait_valid(sd)
    try:
        rule = control.eio("*/dom_md/metadata", "read")
        entry = rig.wait_valid(sd, False, timeout=INTERVAL + TIMEOUT + 20)
        assert entry["code"] == 208, entry
        assert control.rules()[0]["hits"] >= 1  # the probe's read reached faultfs and failed
        assert rig.call("Host.ping") is True
        control.remove(rule)
        rig.wait_valid(sd, timeout=INTERVAL + TIMEOUT + 20)

        # a probe write that never returns: the monitor gives up on it (215) and stays
        # responsive; the held write completes once released
        control.hang("*/dom_md/probe", "write")
        control.wait_blocked(1, timeout=INTERVAL + 20)
        entry = rig.wait_valid(sd, False, timeout=INTERVAL + TIMEOUT + 20)
        assert entry["code"] == 215, entry
        assert rig.call("Host.ping") is True
        assert rig.call("StoragePool.getInfo", storagepoolID=sp)["info"]["master_uuid"] == sd
        control.clear()
        rig.wait_valid(sd, timeout=INTERVAL + TIMEOUT + 20)
        assert control.stats()["blocked"] == 0
    finally:
        control.clear()
    assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True




@pytest.mark.timeout(180)
def test_volume_creation_on_failing_storage_reverts_with_a_storage_error(
        faultfs: FaultFSMount, rig: Rig) -> None:
    mnt, control, _src = faultfs
    rig.start()
    path = mnt / "dom"
    path.mkdir()
    rig.connect("localfs", str(path))
    sd = rig.domain("localfs", str(path), "faulty")
    sp = rig.pool(sd)
    images = path / sd / "images"
    try:
        control.eio("*/images/*", "write")
        img, _vol, task_id = rig.create_volume(sp, sd, size=64 << 20, fmt="cow",
                                               prealloc="preallocated")
        status = rig.task(task_id)
        assert status["taskResult"] == "failure", status
        assert not (images / img).exists()  # reverted: nothing left behind
        assert control.rules()[0]["hits"] >= 1
    finally:
        control.clear()
    assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
    assert 200 <= status["code"] < 300, status  # a storage error, not an internal one


@pytest.mark.timeout(180)
def test_a_failing_read_in_prepare_is_a_storage_error(faultfs: FaultFSMount, rig: Rig) -> None:
    """EIO under Image.prepare answers a 2xx storage error naming the domain, never an
    internal error (it was -32603 "OSError in Image.prepare")."""
    mnt, control, _src = faultfs
    rig.start()
    path = mnt / "dom"
    path.mkdir()
    rig.connect("localfs", str(path))
    sd = rig.domain("localfs", str(path), "faulty")
    sp = rig.pool(sd)
    img, vol, task_id = rig.create_volume(sp, sd, size=16 << 20)
    assert rig.task(task_id)["taskResult"] == "success"
    try:
        control.eio("*/images/*", "any")
        failed = rig.error("Image.prepare", storagepoolID=sp, storagedomainID=sd,
                           imageID=img, volumeID=vol)
        assert 200 <= failed.code < 300 and sd in failed.message, failed
    finally:
        control.clear()
    prepared = rig.call("Image.prepare", storagepoolID=sp, storagedomainID=sd, imageID=img,
                        volumeID=vol)  # nothing lost: it works once the storage answers
    assert prepared["path"]
    assert rig.call("Image.teardown", storagepoolID=sp, storagedomainID=sd, imageID=img,
                    volumeID=vol) is True
    assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
