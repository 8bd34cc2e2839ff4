"""Tasks followed from the command line: ``vdsm-client ... --wait`` and ``Task wait`` show a
preallocated volume's progress in bytes and exit with the task's outcome; the
``|jobs|status|`` events name the verb and the objects. Real vdsmd, real qemu-img writing a
fully preallocated volume on a local domain."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage.rig import CONFIG, Rig, new_id

pytestmark = pytest.mark.timeout(120)

VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20


@pytest.fixture
def full(tmp: Path) -> Iterator[Rig]:
    rig = Rig(tmp, config=CONFIG + 'file_preallocation = "full"\n')
    try:
        rig.start()
        yield rig
    finally:
        rig.cleanup()


def vdsm_client(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vdsm-client"), "--api", rig.d.api, *args],
                          capture_output=True, text=True, timeout=90, check=False)


def test_wait_follows_a_task_in_bytes_and_exits_with_its_outcome(full: Rig) -> None:
    rig = full
    sd = rig.domain("localfs", str(rig.local_dir("data")))
    sp = rig.pool(sd)
    img, vol = new_id(), new_id()
    ids = [f"storagepoolID={sp}", f"storagedomainID={sd}", f"imageID={img}"]
    with rig.subscriber("|jobs|status|") as sub:
        done = vdsm_client(rig, "Volume", "create", *ids, f"volumeID={vol}", "size=64M",
                           "volFormat=raw", "preallocate=preallocated", "--wait")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        events = []
        while (event := sub.receive(2.0)) is not None:
            events.append(event[1])
            if event[1]["taskState"] == "finished":
                break
    assert status["taskResult"] == "success" and status["verb"] == "Volume.create"
    assert status["objects"] == {"spUUID": sp, "sdUUID": sd, "imgUUID": img, "volUUID": vol}
    assert (status["progress"]["bytesDone"], status["progress"]["bytesTotal"]) == \
        (64 * MIB, 64 * MIB)
    lines = done.stderr.splitlines()
    assert lines[-1] == (f"task {status['taskID']} Volume.create: finished (success), "
                         "64 MiB of 64 MiB (100%): done")
    assert all(line.startswith(f"task {status['taskID']} Volume.create: ") for line in lines)
    assert events and all(e["verb"] == "Volume.create" and e["objects"] == status["objects"]
                          for e in events)
    # the bytes written, in the last event and in Host.getAllTasksStatuses (the events
    # while a task writes: tests/storage/test_tasks.py)
    assert events[-1]["progress"]["bytesDone"] == 64 * MIB
    listed = rig.call("Host.getAllTasksStatuses")[status["taskID"]]
    assert (listed["progress"]["bytesDone"], listed["progress"]["bytesTotal"]) == \
        (64 * MIB, 64 * MIB)
    assert listed["verb"] == "Volume.create" and listed["objects"] == status["objects"]
    info = rig.call("Volume.getInfo", storagepoolID=sp, storagedomainID=sd, imageID=img,
                    volumeID=vol)
    assert int(info["truesize"]) >= 64 * MIB  # really written

    # Task wait on a finished task: its outcome at once
    again = vdsm_client(rig, "Task", "wait", status["taskID"], "-o", "yaml")
    assert again.returncode == 0 and "taskResult: success" in again.stdout

    # a task that fails: --wait exits with its error's code (211, no space: 5)
    failing = vdsm_client(rig, "Volume", "create", *ids, f"volumeID={new_id()}",
                          "size=64T", "volFormat=raw", "preallocate=preallocated", "--wait")
    assert failing.returncode == 5, failing.stderr
    assert "211" in failing.stdout + failing.stderr or "space" in failing.stderr
