"""Volumes in use cannot be deleted: through the real API, across a restart, and against a
prepare that races with the deletion task (real fsfreeze, a real busy task worker)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from tests.harness import wait_for
from tests.storage.helpers import frozen
from tests.storage.rig import Rig, ext4_device

MiB = 1 << 20


def volume_ids(sp: str, sd: str, img: str, vol: str | None = None) -> dict[str, Any]:
    ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img}
    return ids if vol is None else {**ids, "volumeID": vol}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["localfs", "loop"])
def test_a_prepared_volume_and_its_image_are_not_deleted_also_after_a_restart(
        rig: Rig, kind: str) -> None:
    rig.start()
    data = rig.local_dir("data")
    sd = rig.domain(kind, str(data), "data")
    sp = rig.pool(sd)
    img, base, task = rig.create_volume(sp, sd, size=64 * MiB, initialSize=8 * MiB)
    assert rig.task(task)["taskResult"] == "success"
    _img, top, task = rig.create_volume(sp, sd, size=64 * MiB, initialSize=8 * MiB, img=img,
                                        srcVolUUID=base)
    assert rig.task(task)["taskResult"] == "success"
    files = [data / sd / "images" / img / vol for vol in (base, top)]
    rig.call("Image.prepare", **volume_ids(sp, sd, img, top))

    def refused() -> None:
        error = rig.error("Volume.delete", **volume_ids(sp, sd, img, top))
        assert error.code == 218, error
        assert "prepared for api" in error.message
        error = rig.error("Volume.delete", **volume_ids(sp, sd, img, base))
        assert error.code == 217 and top in error.message  # a parent, whatever its use
        error = rig.error("Image.delete", **volume_ids(sp, sd, img))
        assert error.code == 223, error
        assert img in error.message and top in error.message
        assert all(f.is_file() for f in files)

    refused()
    rig.stop()  # a restarted vdsmd still knows the volume is in use
    rig.start()
    rig.wait_valid(sd)
    refused()
    assert rig.call("Image.teardown", **volume_ids(sp, sd, img)) is True
    assert rig.task(rig.call("Volume.delete", **volume_ids(sp, sd, img, top)))[
        "taskResult"] == "success"
    assert rig.task(rig.call("Image.delete", **volume_ids(sp, sd, img)))[
        "taskResult"] == "success"
    assert not any(f.exists() for f in files)
    assert not list((rig.workdir / "run" / "storage" / "prepared").glob(f"{sd}/*"))


@pytest.mark.timeout(180)
def test_a_prepare_between_the_check_and_a_queued_deletion_wins(rig: Rig) -> None:
    """The deletion task re-checks when it runs: a volume prepared while its deletion was
    queued (behind a busy task worker) is not deleted."""
    rig.config += 'task_workers = 1\nfile_preallocation = "full"\n'
    rig.start()
    sd = rig.domain("localfs", str(rig.local_dir("data")), "data")
    sp = rig.pool(sd)
    img, vol, task = rig.create_volume(sp, sd, size=MiB)
    assert rig.task(task)["taskResult"] == "success"
    _img, _big, busy = rig.create_volume(sp, sd, size=4 << 30, fmt="raw",
                                         prealloc="preallocated")
    wait_for(lambda: rig.call("Task.getStatus", taskID=busy)["taskState"] == "running", 30,
             what="the only task worker busy")
    deletion = rig.call("Volume.delete", **volume_ids(sp, sd, img, vol))  # checked, queued
    assert rig.call("Task.getStatus", taskID=deletion)["taskState"] == "queued"
    prepared = rig.call("Image.prepare", **volume_ids(sp, sd, img, vol))
    assert rig.call("Task.stop", taskID=busy) is True
    status = rig.task(deletion)
    assert (status["taskResult"], status["code"]) == ("failure", 218), status
    assert Path(prepared["path"]).is_file()
    assert rig.call("Volume.getInfo", **volume_ids(sp, sd, img, vol))["legality"] == "LEGAL"
    assert rig.call("Image.teardown", **volume_ids(sp, sd, img)) is True
    assert rig.task(rig.call("Volume.delete", **volume_ids(sp, sd, img, vol)))[
        "taskResult"] == "success"


@pytest.mark.timeout(180)
def test_a_prepare_during_a_running_deletion_waits_for_it_and_finds_nothing(
        rig: Rig) -> None:
    """The deletion holds the image from its check to its end: a prepare arriving while it
    is stuck (its filesystem frozen) is refused as busy (224), never served a volume that is
    being deleted; once it is done, the volume is gone."""
    rig.config += "call_timeout = 3\n"
    rig.start()
    master = rig.domain("localfs", str(rig.local_dir("master")), "master")  # the SPM's lease
    device = ext4_device(rig.tmp, "fs", 64 * MiB)                         # stays writable
    rig.connect("posixfs", device, vfs_type="ext4")
    sd = rig.domain("posixfs", device, "fs")
    sp = rig.pool(master, others=(sd,))
    img, vol, task = rig.create_volume(sp, sd, size=MiB)
    assert rig.task(task)["taskResult"] == "success"
    ids = volume_ids(sp, sd, img, vol)
    mountpoint = rig.mount_point(device)
    lock_file = rig.workdir / "run" / "storage" / "prepared" / ".locks" / f"{sd}-{img}"
    with frozen(mountpoint):
        deletion = rig.call("Volume.delete", **ids)

        def deleting() -> bool:  # the SPM's writer holds the image's lock, stuck in the fs
            if rig.call("Task.getStatus", taskID=deletion)["taskState"] != "running":
                return False
            return image_lock_held(lock_file)

        wait_for(deleting, 30, what="the deletion holding the image (blocked on the frozen fs)")
        error = rig.error("Image.prepare", **ids)
        assert error.code in (224, 215), error  # busy: the image is being deleted
        assert rig.call("Task.getStatus", taskID=deletion)["taskState"] == "running"
    assert rig.task(deletion)["taskResult"] == "success"
    error = rig.error("Image.prepare", **ids)
    assert error.code == 204, error
    assert not list((rig.workdir / "run" / "storage" / "prepared").glob(f"{sd}/{img}/*"))


def image_lock_held(path: Path) -> bool:
    """Whether another process holds the image's lock (an flock, as the agent takes it)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
