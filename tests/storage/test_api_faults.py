"""Storage faults through the real API: frozen storage, a full disk, stopped and killed tasks.

Each test runs vdsmd as a process over real loop devices, ext4 mounts and qemu-img. Frozen
filesystems are thawed in a ``finally``; the ``rig`` fixture unmounts and detaches whatever
remains, even when a test fails.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from actors.storage.monitor import FINDER_PREFIX
from actors.storage.probe import THREAD_PREFIX as PROBE_PREFIX
from actors.storage.workers import COMM_MAX
from tests.harness import next_event, wait_for
from tests.storage.helpers import fill, sh, tmpfs
from tests.storage.rig import Rig, children, ext4_device, new_id, thread_names, tools_holding

log = logging.getLogger(__name__)

MiB = 1 << 20
INTERVAL, TIMEOUT = 1.0, 2.0


API_WORKERS = 2


def probe_thread(sd: str) -> str:
    """The name a probe thread of domain ``sd`` carries in the kernel (cut to 15 bytes)."""
    return f"{PROBE_PREFIX}{sd}".encode()[:COMM_MAX].decode()


def checked_since(rig: Rig, sd: str, since: float) -> bool:
    """Whether ``sd`` had a check completed after ``since`` (this host's monotonic clock,
    which vdsmd shares): lastCheck is "seconds before the answer", so a check is surely
    newer than ``since`` when lastCheck is below the time from ``since`` to the request."""
    asked = time.monotonic()
    return bool(rig.repo_stats()[sd]["lastCheck"] < asked - since - 0.001)


def wait_checked(rig: Rig, sd: str, since: float) -> None:
    wait_for(lambda: checked_since(rig, sd, since), 15, what=f"a new check of {sd}")


@pytest.mark.timeout(180)
def test_frozen_domain_turns_invalid_while_everything_else_answers(rig: Rig) -> None:
    rig.config += f"[api]\nworkers = {API_WORKERS}\n"
    d = rig.start()
    device = ext4_device(rig.tmp, "frozen", 64 * MiB)
    rig.connect("posixfs", device, vfs_type="ext4")
    frozen_sd = rig.domain("posixfs", device, "frozen")
    sd_a = rig.domain("localfs", str(rig.local_dir("a")), "a")
    sd_b = rig.domain("localfs", str(rig.local_dir("b")), "b")
    sp = rig.pool(sd_a, (frozen_sd, sd_b))
    for sd in (sd_a, sd_b, frozen_sd):
        rig.wait_valid(sd)
    other_monitor = f"/storage/pools/{sp}/{sd_b}"
    healthy_probes = {probe_thread(sd) for sd in (sd_a, sd_b)}
    stuck_probe = probe_thread(frozen_sd)
    main = Path(f"/proc/{d.pid}/comm").read_text().strip()

    def kinds() -> tuple[Counter[str], int]:
        """The named storage threads other than probes (a count per name), and the threads
        that carry no name of their own (actors, API workers, the clock...)."""
        names = thread_names(d.pid)
        named = Counter({n: c for n, c in names.items()
                         if n != main and not n.startswith(PROBE_PREFIX)})
        return named, names[main]

    with rig.subscriber("|storage|domain_status|") as sub:
        named_before, unnamed_before = kinds()
        before_children = children(d.pid)
        mountpoint = rig.mount_point(device)
        sh("fsfreeze", "--freeze", str(mountpoint))
        frozen_at = time.monotonic()
        try:
            _topic, event = next_event(
                sub, lambda _t, p: p["sdUUID"] == frozen_sd and p["valid"] is False,
                timeout=INTERVAL + TIMEOUT + 15)
            log.info("the frozen domain was reported invalid %.2f s after the freeze",
                     time.monotonic() - frozen_at)
            assert event["code"] == 215
            assert event["delay"] >= TIMEOUT  # declared because its probe hung that long
            for _ in range(4):  # several more intervals: no pile-up, everyone else answers
                since = time.monotonic()
                assert d.call("Host.ping", timeout=5) is True
                stats = rig.repo_stats()
                assert stats[frozen_sd]["valid"] is False
                assert stats[frozen_sd]["code"] == 215
                for sd in (sd_a, sd_b):  # the healthy domains keep being checked
                    assert stats[sd]["valid"] is True
                    wait_checked(rig, sd, since)
                assert d.call("Host.getStats")["storageDomains"][frozen_sd]["valid"] is False
                assert rig.call("Actors.inspect", path=other_monitor)["answering"] is True
                # the frozen domain holds exactly one stuck probe thread, each healthy one at
                # most one probe at a time, and no other storage thread is added
                names = thread_names(d.pid)
                assert names[stuck_probe] == 1, names
                assert all(names[p] <= 1 for p in healthy_probes), names
                assert not [n for n in names if n.startswith(FINDER_PREFIX[:COMM_MAX])]
                named, unnamed = kinds()
                assert named <= named_before, (named, named_before)
                assert unnamed <= unnamed_before + API_WORKERS, (unnamed, unnamed_before)
                time.sleep(INTERVAL)
            assert stats[frozen_sd]["lastCheck"] > INTERVAL + TIMEOUT
        finally:
            sh("fsfreeze", "--unfreeze", str(mountpoint), check=False)
        _topic, event = next_event(
            sub, lambda _t, p: p["sdUUID"] == frozen_sd and p["valid"] is True, timeout=20)
        assert event["code"] == 0
    rig.wait_valid(frozen_sd)
    wait_for(lambda: thread_names(d.pid)[stuck_probe] <= 1 and kinds()[0] <= named_before,
             20, what="the stuck probe ended, no storage thread added")
    assert kinds()[1] <= unnamed_before + API_WORKERS
    assert children(d.pid) == before_children
    assert rig.call("StoragePool.disconnect", storagepoolID=sp, hostID=1) is True
    assert rig.repo_stats() == {}


@pytest.mark.timeout(120)
def test_volume_creation_out_of_space_fails_and_leaves_nothing(rig: Rig) -> None:
    rig.start()
    device = ext4_device(rig.tmp, "small", 40 * MiB)
    rig.connect("posixfs", device, vfs_type="ext4")
    sd = rig.domain("posixfs", device, "small")
    sp = rig.pool(sd)
    images = rig.mount_point(device) / sd / "images"
    st = os.statvfs(images)
    free = st.f_bavail * st.f_frsize
    # qcow2 fully allocated needs its capacity plus its own metadata: this fits the space
    # check but not the disk, so qemu-img runs out of space half way.
    size = (free - 64 * 1024) // 65536 * 65536
    img, vol, task_id = rig.create_volume(sp, sd, size=size, fmt="cow", prealloc="preallocated")
    status = rig.task(task_id)
    assert status["taskResult"] == "failure", status
    assert status["code"] == 211, status
    assert "space" in status["message"].lower()
    assert not (images / img).exists()
    assert list(images.iterdir()) == []
    st = os.statvfs(images)
    assert st.f_bavail * st.f_frsize >= free - 64 * 1024  # the space came back
    error = rig.error("Volume.getInfo", storagepoolID=sp, storagedomainID=sd, imageID=img,
                      volumeID=vol)
    assert error.code == 203
    assert img in error.message
    # a raw volume larger than the domain is refused by the space check, before any write
    img, vol, task_id = rig.create_volume(sp, sd, size=free + 8 * MiB, fmt="raw",
                                          prealloc="preallocated")
    status = rig.task(task_id)
    assert (status["taskResult"], status["code"]) == ("failure", 211)
    assert list(images.iterdir()) == []


def _long_preallocation(rig: Rig) -> tuple[str, str, str, str, Path]:
    """A 4 GiB raw volume being fully preallocated (file_preallocation = full)."""
    sd = rig.domain("localfs", str(rig.local_dir("data")), "data")
    sp = rig.pool(sd)
    img, vol, task_id = rig.create_volume(sp, sd, size=4 << 30, fmt="raw",
                                          prealloc="preallocated")
    path = rig.tmp / "data" / sd / "images" / img / vol

    def writing() -> bool:
        status = rig.call("Task.getStatus", taskID=task_id)
        assert status["taskState"] != "finished", status
        return status["progress"]["current"] == "data" and bool(tools_holding(path))

    wait_for(writing, 30, 0.05, "qemu-img preallocating")
    return sp, sd, img, task_id, path


@pytest.mark.timeout(180)
def test_stopped_preallocation_is_killed_and_reverted(rig: Rig) -> None:
    rig.config += 'file_preallocation = "full"\n'
    d = rig.start()
    with rig.subscriber("|jobs|status|") as sub:
        _sp, _sd, _img, task_id, path = _long_preallocation(rig)
        assert rig.call("Task.stop", taskID=task_id) is True
        status = rig.task(task_id)
        states = []
        deadline = time.monotonic() + 30
        while states[-1:] != ["finished"] and time.monotonic() < deadline:
            event = sub.receive(5)
            if event is not None and event[1]["taskID"] == task_id:
                states.append(event[1]["taskState"])
    assert states[0] == "queued" and "aborting" in states and states[-1] == "finished", states
    assert (status["taskResult"], status["code"]) == ("failure", 404), status
    assert not path.exists()
    assert not path.parent.exists()
    assert tools_holding(path) == []
    assert children(d.pid) == []
    assert rig.call("Task.revert", taskID=task_id) is True
    status = rig.task(task_id)
    assert status["taskResult"] == "cleanSuccess", status
    assert rig.error("Task.stop", taskID=task_id).code == 403
    assert rig.call("Task.clear", taskID=task_id) is True
    assert rig.error("Task.getStatus", taskID=task_id).code == 401


@pytest.mark.timeout(180)
def test_vdsmd_killed_during_preallocation_reverts_the_task_on_restart(rig: Rig) -> None:
    rig.config += 'file_preallocation = "full"\n'
    rig.start()
    sp, sd, img, task_id, path = _long_preallocation(rig)
    rig.kill()
    assert path.exists()  # half-created, and qemu-img may still be writing it
    d = rig.start()
    status = rig.task(task_id, timeout=60)
    assert status["taskResult"] == "cleanSuccess", status
    assert "interrupted" in status["message"]
    assert not path.exists()
    assert not path.parent.exists()
    wait_for(lambda: tools_holding(path) == [], 10, what="no qemu-img left")
    assert children(d.pid) == []
    assert rig.call("Host.getAllTasksStatuses")[task_id]["taskResult"] == "cleanSuccess"
    rig.wait_valid(sd)  # the pool was reconnected from the state dir
    error = rig.error("Volume.getInfo", storagepoolID=sp, storagedomainID=sd, imageID=img,
                      volumeID=path.name)
    assert error.code == 203


@pytest.mark.timeout(120)
def test_a_task_that_cannot_be_recorded_gets_an_error_not_a_task_id(rig: Rig) -> None:
    tasks_dir = rig.workdir / "state" / "storage" / "tasks"
    with tmpfs(tasks_dir, 64 << 10):
        rig.start()
        sd = rig.domain("localfs", str(rig.local_dir("data")), "data")
        sp = rig.pool(sd)
        filler = fill(tasks_dir)
        before = rig.call("Host.getAllTasksStatuses")
        ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": new_id()}
        error = rig.error("Volume.create", volumeID=new_id(), size=MiB, volFormat="cow",
                          preallocate="sparse", **ids)
        assert error.code == 211, error  # storage-class (no space), not -32603 nor a task id
        assert "space" in error.message.lower()
        assert rig.call("Host.getAllTasksStatuses") == before
        assert "not queued" in rig.d.log()
        assert list(tasks_dir.iterdir()) == [filler]
        filler.unlink()
        _img, _vol, task_id = rig.create_volume(sp, sd, size=MiB, img=ids["imageID"])
        assert rig.task(task_id)["taskResult"] == "success"
        rig.stop()
