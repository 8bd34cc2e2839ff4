"""The job store: records on disk before they are visible, events as storage tasks have
them, finished jobs forgotten in time, a full state filesystem refusing a new job."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.jobs.record import ABORTED, DONE, FAILED, MIGRATE_OUT, RUNNING, Job
from actors.jobs.store import JobStore
from messaging.errors import InvalidParams, NoSpace

VM = str(uuid.uuid4())


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((topic, payload))


def test_a_job_is_recorded_then_published_and_its_changes_too(tmp_path: Path) -> None:
    sink = Sink()
    store = JobStore(tmp_path / "jobs", sink)
    job = store.add(MIGRATE_OUT, VM, message="accepted", details={"dst": "b"})
    on_disk = json.loads((tmp_path / "jobs" / f"{job.job_id}.json").read_text())
    assert on_disk["status"] == "pending" and on_disk["details"] == {"dst": "b"}
    store.update(job.job_id, status=RUNNING, message="migrating")
    store.update(job.job_id, persist=False, progress=40, details={"dataRemaining": 5})
    assert store.get(job.job_id).details == {"dst": "b", "dataRemaining": 5}  # type: ignore[union-attr]
    assert json.loads((tmp_path / "jobs" / f"{job.job_id}.json").read_text())["progress"] == 0
    store.update(job.job_id, status=DONE, progress=100, message="there")
    topics = [t for t, _ in sink.events]
    assert topics == [f"|jobs|status|{job.job_id}"] * 3  # progress alone is not a state change
    states = [(p["taskState"], p["taskResult"], p["status"]) for _, p in sink.events]
    assert states == [("queued", "", "pending"), ("running", "", "running"),
                      ("finished", "success", "done")]
    last = sink.events[-1][1]
    assert last["taskID"] == last["jobID"] == job.job_id and last["job_type"] == MIGRATE_OUT
    # a finished job does not change any more, but for details learnt after its end
    assert store.update(job.job_id, status=FAILED).status == DONE
    assert store.update(job.job_id, details={"downtime": 40}).details["downtime"] == 40
    assert len(sink.events) == 3


def test_the_wire_forms(tmp_path: Path) -> None:
    store = JobStore(tmp_path, Sink())
    job = store.add(MIGRATE_OUT, VM, details={"dst": "b"})
    failed = store.update(job.job_id, status=FAILED, code=12, message="no room")
    wire = failed.to_wire()
    assert wire["id"] == job.job_id and wire["job_type"] == MIGRATE_OUT and wire["dst"] == "b"
    assert wire["error"] == {"code": 12, "message": "no room"} and "endTime" in wire
    assert failed.event()["taskResult"] == "failure"
    assert Job.from_json(failed.to_json()) == failed


def test_a_restart_finds_the_unfinished_jobs_and_ignores_bad_records(tmp_path: Path) -> None:
    store = JobStore(tmp_path, Sink())
    running = store.add(MIGRATE_OUT, VM)
    store.update(running.job_id, status=RUNNING)
    ended = store.add(MIGRATE_OUT, VM)
    store.update(ended.job_id, status=ABORTED)
    (tmp_path / f"{uuid.uuid4()}.json").write_text("{not json")
    (tmp_path / f"{uuid.uuid4()}.json").write_text(json.dumps({"job_id": "x"}))
    again = JobStore(tmp_path, Sink())
    assert [j.job_id for j in again.load()] == [running.job_id]
    assert again.get(ended.job_id) is not None  # still listed
    assert again.unfinished(VM)[0].status == RUNNING
    assert again.last(VM, {MIGRATE_OUT}).job_id == ended.job_id  # type: ignore[union-attr]


def test_an_id_is_taken_once(tmp_path: Path) -> None:
    store = JobStore(tmp_path, Sink())
    job_id = str(uuid.uuid4())
    store.add(MIGRATE_OUT, VM, job_id=job_id)
    with pytest.raises(InvalidParams) as e:
        store.add(MIGRATE_OUT, VM, job_id=job_id)
    assert e.value.param == "jobID"


def test_finished_jobs_are_forgotten_after_keep(tmp_path: Path) -> None:
    store = JobStore(tmp_path, Sink(), keep=0.2)
    old = store.add(MIGRATE_OUT, VM)
    store.update(old.job_id, status=DONE)
    time.sleep(0.3)
    new = store.add(MIGRATE_OUT, VM)
    store.update(new.job_id, status=DONE)  # a job that ends prunes the old ones
    assert store.get(old.job_id) is None and store.get(new.job_id) is not None
    assert not (tmp_path / f"{old.job_id}.json").exists()


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                   check=True, timeout=30)
    try:
        (where / "jobs").mkdir()
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space"):
                for _ in range(1000):
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield where / "jobs"
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


@pytest.mark.root
def test_a_full_state_filesystem_refuses_a_new_job(full: Path) -> None:
    sink = Sink()
    store = JobStore(full, sink)
    with pytest.raises(NoSpace):
        store.add(MIGRATE_OUT, VM)
    assert store.jobs() == [] and sink.events == [] and list(full.iterdir()) == []
