"""A hibernation's or a restore's bytes: the offset of the descriptor a real process holds
on a real file, read from /proc while it reads or writes, reported into a real job store
(and its events). The process here is a Python child standing in for QEMU or libvirt's I/O
helper (the sampler looks for processes by name: ``python`` here); a real save and restore
through libvirt, sampled live: tests/vm/test_api_jobwait.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.jobs.record import HIBERNATE, RESTORE, RUNNING
from actors.jobs.store import JobStore
from actors.vm.imageprogress import ImageProgress, find_reader, position, watching
from tests.harness import wait_for

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
VM = str(uuid.uuid4())
CHILD = """
import sys
f = open(sys.argv[1], sys.argv[2] + "b", buffering=0)
for line in sys.stdin:  # each line: read or write that many MiB, then say so
    n = int(line) << 20
    if sys.argv[2] == "r":
        while n:
            n -= len(f.read(n))
    else:
        f.write(b"x" * n)
    print("ok", flush=True)
"""


class Child:
    """A process that reads (``r``) or writes (``w``) ``path`` as it is told."""

    def __init__(self, path: Path, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def move(self, mib: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{mib}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((topic, payload))


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def store(tmp_path: Path, sink: Sink) -> JobStore:
    return JobStore(tmp_path / "jobs", sink)


def details(store: JobStore, job_id: str) -> dict[str, Any]:
    job = store.get(job_id)
    assert job is not None
    return {**job.details, "progress": job.progress}


def wait_bytes(store: JobStore, job_id: str, done: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        now = details(store, job_id)
        return now if now.get("bytesDone") == done else None

    found: dict[str, Any] = wait_for(check, 20, 0.02, f"bytesDone {done}")
    return found


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "vm.save"
    path.write_bytes(b"\0" * (4 * MIB))
    yield path


def test_a_restore_reports_the_bytes_read_of_the_image(store: JobStore, sink: Sink,
                                                        image: Path) -> None:
    job = store.add(RESTORE, VM)
    store.update(job.job_id, status=RUNNING)
    child = Child(image, "r")
    try:
        child.move(1)
        assert find_reader(str(image), comm_prefix=("python",)) is not None
        progress = ImageProgress(VM, job.job_id, str(image), jobs=store, interval=0.02,
                                 reading=True, comm_prefix=("python",))
        with watching(progress):
            assert wait_bytes(store, job.job_id, MIB) == {
                "bytesDone": MIB, "bytesTotal": 4 * MIB, "progress": 25}
            child.move(2)
            assert wait_bytes(store, job.job_id, 3 * MIB)["progress"] == 75
    finally:
        child.close()
    # it succeeded: the whole image was read
    assert details(store, job.job_id) == {"bytesDone": 4 * MIB, "bytesTotal": 4 * MIB,
                                          "progress": 99}
    published = [p for t, p in sink.events if t == f"|jobs|status|{job.job_id}"]
    read = [p["bytesDone"] for p in published if "bytesDone" in p]
    assert read == sorted(read) and read[0] == MIB and read[-1] == 4 * MIB and 3 * MIB in read
    assert all(p["verb"] == "VM.create" and p["objects"] == {"vmID": VM} for p in published)


def test_a_save_reports_the_bytes_written_and_its_size_once_done(store: JobStore,
                                                                 tmp_path: Path) -> None:
    target = tmp_path / "new.save"
    target.touch()
    job = store.add(HIBERNATE, VM)
    child = Child(target, "w")
    try:
        progress = ImageProgress(VM, job.job_id, str(target), jobs=store, interval=0.02,
                                 reading=False, comm_prefix=("python",))
        with watching(progress):
            child.move(1)
            # its size is not known while it is written
            assert wait_bytes(store, job.job_id, MIB) == {"bytesDone": MIB, "progress": 0}
            child.move(1)
            wait_bytes(store, job.job_id, 2 * MIB)
    finally:
        child.close()
    assert details(store, job.job_id) == {"bytesDone": 2 * MIB, "bytesTotal": 2 * MIB,
                                          "progress": 99}


def test_a_failed_save_records_no_size_and_other_processes_are_not_looked_at(
        store: JobStore, image: Path) -> None:
    job = store.add(HIBERNATE, VM)
    child = Child(image, "r")
    try:
        child.move(1)
        # only QEMU and libvirt's I/O helper: the Python child is neither
        assert find_reader(str(image)) is None
        progress = ImageProgress(VM, job.job_id, str(image), jobs=store, interval=0.02,
                                 reading=False)
        with pytest.raises(RuntimeError), watching(progress):
            child.move(1)
            raise RuntimeError("the save failed")
        assert details(store, job.job_id) == {"progress": 0}
        # a closed descriptor, a process that is gone: no offset
        where = find_reader(str(image), comm_prefix=("python",))
        assert where is not None and position(*where) == 2 * MIB
    finally:
        child.close()
    assert position(*where) is None
