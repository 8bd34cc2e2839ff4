"""The task manager in-process: run, fail and undo, stop, revert, and recovery after a restart.

The task kinds here are small real ones (files created and removed by steps, a real ``sleep``
command to abort); the storage kinds run through the API in test_api_faults.py.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import pykka
import pytest

from actors.base import ActorContext, Runtime
from actors.storage import tasks as tasks_module
from actors.storage.command import Aborter, run
from actors.storage.steps import Journal, Progress, Step, revert_steps, run_steps
from actors.storage.tasks import SubmitTask, TaskManager
from actors.storage.taskstore import RUNNING, TaskRecord, TaskStore
from messaging.errors import (
    NoSpace,
    NoSuchTask,
    Recovering,
    StorageError,
    TaskNotFinished,
    TaskStateError,
)
from tests.harness import wait_for
from tests.storage.conftest import Sink
from tests.storage.helpers import fill, tmpfs

FLAKY: dict[str, int] = {}


class FileSteps:
    """Step i creates ``dir/s<i>``; options make a step fail, sleep, or an undo fail once."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.dir = Path(params["dir"])
        self.count = int(params.get("steps", 3))
        self.fail_at = params.get("fail_at")
        self.sleep_at = params.get("sleep_at")
        self.undo_fails = params.get("undo_fails", 0)
        self.revert_retryable = params.get("revert_retryable", 0)
        self.key = str(params.get("key", ""))

    def steps(self) -> list[Step]:
        def make(i: int) -> Step:
            path = self.dir / f"s{i}"

            def do(abort: Aborter) -> None:
                path.write_text("x")
                if i == self.sleep_at:
                    run(["sleep", "60"], timeout=90, abort=abort)
                if i == self.fail_at:
                    raise StorageError(reason=f"step {i} failed")

            def undo() -> None:
                if FLAKY.get(self.key, 0) < self.undo_fails:
                    FLAKY[self.key] = FLAKY.get(self.key, 0) + 1
                    raise StorageError(reason="undo failed")
                path.unlink(missing_ok=True)

            return Step(f"s{i}", do, undo)

        return [make(i) for i in range(self.count)]

    def run(self, abort: Aborter, journal: Journal) -> None:
        run_steps(self.steps(), abort=abort, journal=journal)

    def revert(self, started: int) -> None:
        if FLAKY.get(f"{self.key}-revert", 0) < self.revert_retryable:
            FLAKY[f"{self.key}-revert"] = FLAKY.get(f"{self.key}-revert", 0) + 1
            raise Recovering()
        failures = revert_steps(self.steps(), started)
        if failures:
            raise StorageError(reason=f"undo failed: {failures}")


def start(runtime: Runtime, state: Path) -> pykka.ActorProxy[TaskManager]:
    ctx = ActorContext(path="/storage/tasks", runtime=runtime)
    return TaskManager.start(ctx, store=TaskStore(state), builders={"Test.files": FileSteps},
                             workers=2).proxy()


def finished(manager: pykka.ActorProxy[TaskManager], task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = manager.task_status(task_id).get(timeout=5)
        return status if status["taskState"] == "finished" else None

    result: dict[str, Any] = wait_for(done, 30, 0.02, f"task {task_id}")
    return result


def states(runtime: Runtime, task_id: str) -> list[str]:
    assert isinstance(runtime.events, Sink)
    return [p["taskState"] for p in runtime.events.of(f"|jobs|status|{task_id}")]


@pytest.mark.timeout(30)
def test_tasks_run_fail_and_leave_nothing(tmp: Path, runtime: Runtime) -> None:
    manager = start(runtime, tmp / "tasks")
    ok = manager.submit("Test.files", {"dir": str(tmp)}).get(timeout=5)
    status = finished(manager, ok)
    assert (status["taskResult"], status["code"], status["progress"]["done"]) == ("success", 0, 3)
    assert sorted(p.name for p in tmp.glob("s*")) == ["s0", "s1", "s2"]
    assert states(runtime, ok) == ["queued", "running", "finished"]
    for path in tmp.glob("s*"):
        path.unlink()

    failed = manager.submit("Test.files", {"dir": str(tmp), "fail_at": 1}).get(timeout=5)
    status = finished(manager, failed)
    assert (status["taskResult"], status["code"]) == ("failure", 200)
    assert "step 1 failed" in status["message"]
    assert list(tmp.glob("s*")) == []  # the started steps were undone
    assert manager.revert_task(failed).get(timeout=5) is True  # nothing left: clean at once
    assert finished(manager, failed)["taskResult"] == "cleanSuccess"

    statuses = manager.task_statuses().get(timeout=5)
    assert set(statuses) == {ok, failed}
    with pytest.raises(TaskStateError):
        manager.revert_task(ok).get(timeout=5)  # a success is not undone
    assert manager.clear_task(ok).get(timeout=5) is True
    with pytest.raises(NoSuchTask):
        manager.task_status(ok).get(timeout=5)
    with pytest.raises(ValueError):
        manager.submit("No.such", {}).get(timeout=5)


@pytest.mark.timeout(30)
def test_stop_kills_the_running_command_and_undoes(tmp: Path, runtime: Runtime) -> None:
    manager = start(runtime, tmp / "tasks")
    task_id = manager.submit("Test.files", {"dir": str(tmp), "sleep_at": 1}).get(timeout=5)
    wait_for(lambda: manager.task_status(task_id).get(timeout=5)["progress"]["current"] == "s1",
             10, what="the sleep step")
    with pytest.raises(TaskNotFinished):
        manager.clear_task(task_id).get(timeout=5)
    assert manager.stop_task(task_id).get(timeout=5) is True
    status = finished(manager, task_id)
    assert (status["taskResult"], status["code"]) == ("failure", 404)
    assert "stopped by Task.stop" in status["message"]
    assert list(tmp.glob("s*")) == []
    assert states(runtime, task_id) == ["queued", "running", "aborting", "finished"]
    with pytest.raises(TaskStateError):
        manager.stop_task(task_id).get(timeout=5)


@pytest.mark.timeout(30)
def test_a_failed_undo_is_retried_by_revert(tmp: Path, runtime: Runtime) -> None:
    manager = start(runtime, tmp / "tasks")
    key = str(uuid.uuid4())
    task_id = manager.submit("Test.files", {"dir": str(tmp), "fail_at": 2, "undo_fails": 1,
                                            "key": key}).get(timeout=5)
    status = finished(manager, task_id)
    assert status["taskResult"] == "failure"
    assert sorted(p.name for p in tmp.glob("s*")) == ["s2"]  # the failed undo left it
    assert manager.revert_task(task_id).get(timeout=5) is True
    assert finished(manager, task_id)["taskResult"] == "cleanSuccess"
    assert list(tmp.glob("s*")) == []


@pytest.mark.timeout(30)
def test_a_restart_reverts_interrupted_tasks_and_keeps_finished_ones(
        tmp: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_module, "RECOVERY_BACKOFF", 0.05)
    store = TaskStore(tmp / "tasks")
    for name in ("s0", "s1"):
        (tmp / name).write_text("x")
    key = str(uuid.uuid4())
    interrupted = TaskRecord(str(uuid.uuid4()), "Test.files",
                             {"dir": str(tmp), "key": key, "revert_retryable": 2},
                             state=RUNNING, progress=Progress(3, 2, 1, "s1"))
    done = TaskRecord(str(uuid.uuid4()), "Test.files", {"dir": str(tmp)}, state="finished",
                      result="success")
    unknown = TaskRecord(str(uuid.uuid4()), "Gone.kind", {}, state=RUNNING)
    for record in (interrupted, done, unknown):
        store.put(record)
    manager = start(runtime, tmp / "tasks")  # a "restarted" vdsmd finds them
    status = finished(manager, interrupted.task_id)
    assert status["taskResult"] == "cleanSuccess", status
    assert "interrupted by a restart" in status["message"]
    assert list(tmp.glob("s*")) == []
    assert FLAKY[f"{key}-revert"] == 2  # retried past two transient failures
    assert manager.task_status(done.task_id).get(timeout=5)["taskResult"] == "success"
    status = finished(manager, unknown.task_id)
    assert status["taskResult"] == "cleanFailure"
    assert "unknown task kind" in status["message"]
    assert states(runtime, interrupted.task_id)[0] == "recovering"


class Gated:
    """A task kind whose one step waits (bounded) for the test to open ``GATES[key]``."""

    GATES: ClassVar[dict[str, threading.Event]] = {}

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.gate = self.GATES[str(params["key"])]

    def run(self, abort: Aborter, journal: Journal) -> None:
        assert self.gate.wait(20), "the test never opened the gate"

    def revert(self, started: int) -> None:
        pass


def hand_over(manager: pykka.ActorProxy[TaskManager], verb: str,
              params: dict[str, Any]) -> Future[str]:
    """What the pool actor does: tell the task manager a SubmitTask; the reply future."""
    reply: Future[str] = Future()
    manager.actor_ref.tell(SubmitTask(verb, params, str(uuid.uuid4()), reply))
    return reply


@pytest.mark.timeout(60)
def test_a_task_that_cannot_be_recorded_is_refused_not_given_an_id(
        tmp: Path, runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    with tmpfs(tmp / "tasks", 64 << 10) as state:
        manager = start(runtime, state)
        ok = hand_over(manager, "Test.files", {"dir": str(tmp), "steps": 1}).result(5)
        assert finished(manager, ok)["taskResult"] == "success"
        filler = fill(state)
        reply = hand_over(manager, "Test.files", {"dir": str(tmp), "steps": 1})
        with pytest.raises(NoSpace) as refused:
            reply.result(5)
        assert refused.value.code == 211
        assert set(manager.task_statuses().get(timeout=5)) == {ok}  # no phantom task
        assert sorted(p.name for p in state.iterdir()) == sorted([f"{ok}.json", filler.name])
        assert any("not queued" in r.getMessage() and r.levelname == "ERROR"
                   for r in caplog.records)
        # a hand-over its requester gave up on (cancelled) is dropped: nothing runs
        filler.unlink()
        late: Future[str] = Future()
        assert late.cancel()
        manager.actor_ref.tell(SubmitTask("Test.files", {"dir": str(tmp)}, str(uuid.uuid4()),
                                          late))
        again = hand_over(manager, "Test.files", {"dir": str(tmp), "steps": 1}).result(5)
        assert set(manager.task_statuses().get(timeout=5)) == {ok, again}
        assert finished(manager, again)["taskResult"] == "success"


@pytest.mark.timeout(60)
def test_a_state_change_the_disk_refuses_is_kept_pending_and_recorded_later(
        tmp: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_module, "SAVE_RETRY_INITIAL", 0.1)
    key = str(uuid.uuid4())
    Gated.GATES[key] = threading.Event()
    with tmpfs(tmp / "tasks", 64 << 10) as state:
        ctx = ActorContext(path="/storage/tasks", runtime=runtime)
        manager = TaskManager.start(ctx, store=TaskStore(state), builders={"Test.gated": Gated},
                                    workers=1).proxy()
        task_id = manager.submit("Test.gated", {"key": key}).get(timeout=5)
        wait_for(lambda: manager.task_status(task_id).get(timeout=5)["taskState"] == "running",
                 10, what="running")
        filler = fill(state)
        Gated.GATES[key].set()  # the task ends while its end cannot be written
        wait_for(lambda: manager.describe().get(timeout=5)["unsaved"] == [task_id], 10,
                 what="the end pending")
        # what clients read is what a restart would find on disk: still running
        assert manager.task_status(task_id).get(timeout=5)["taskState"] == "running"
        on_disk = TaskRecord.from_json(json.loads((state / f"{task_id}.json").read_text()))
        assert on_disk.state == RUNNING
        assert manager.actor_ref.is_alive()
        filler.unlink()
        assert finished(manager, task_id)["taskResult"] == "success"
        assert manager.describe().get(timeout=5)["unsaved"] == []
        on_disk = TaskRecord.from_json(json.loads((state / f"{task_id}.json").read_text()))
        assert (on_disk.state, on_disk.result) == ("finished", "success")
        assert states(runtime, task_id)[-1] == "finished"


# --- progress in bytes ---------------------------------------------------------------------

MIB = 1 << 20
WRITER = """
import os, sys, time
go, target = sys.argv[1], sys.argv[2]
fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, bytes(1 << 20))
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.02)
os.write(fd, bytes(1 << 20))
"""


class Writes:
    """One step: a real command that writes 1 MiB, waits for ``go``, writes another."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.dir = Path(params["dir"])

    def run(self, abort: Aborter, journal: Journal) -> None:
        def write(abort: Aborter) -> None:
            abort.bytes.expect(2 * MIB)
            run([sys.executable, "-c", WRITER, str(self.dir / "go"), str(self.dir / "data")],
                timeout=60, abort=abort)
            abort.bytes.finish()

        run_steps([Step("data", write)], abort=abort, journal=journal)

    def revert(self, started: int) -> None:
        (self.dir / "data").unlink(missing_ok=True)


@pytest.mark.timeout(60)
def test_a_task_that_writes_data_reports_its_bytes(tmp: Path, runtime: Runtime) -> None:
    ctx = ActorContext(path="/storage/tasks", runtime=runtime)
    manager = TaskManager.start(ctx, store=TaskStore(tmp / "tasks"),
                                builders={"Test.writes": Writes}, workers=1).proxy()
    task_id = manager.submit("Test.writes", {"dir": str(tmp), "sdUUID": str(uuid.uuid4()),
                                             "imgUUID": str(uuid.uuid4())}).get(timeout=5)

    def halfway() -> dict[str, Any] | None:
        status: dict[str, Any] = manager.task_status(task_id).get(timeout=5)
        return status if status["progress"].get("bytesDone", 0) >= MIB else None

    # the command waits for "go": the status shows what it wrote so far, live
    status = wait_for(halfway, 30, 0.05, "1 MiB written")
    assert status["taskState"] == RUNNING
    assert MIB <= status["progress"]["bytesDone"] < 2 * MIB
    assert status["progress"]["bytesTotal"] == 2 * MIB
    assert set(status["objects"]) == {"sdUUID", "imgUUID"} and status["verb"] == "Test.writes"
    # ... and so does a |jobs|status| event, published while it runs
    assert isinstance(runtime.events, Sink)

    def progress_event() -> dict[str, Any] | None:
        return next((p for p in runtime.events.of(f"|jobs|status|{task_id}")
                     if p["taskState"] == RUNNING
                     and p["progress"].get("bytesDone", 0) >= MIB), None)

    event = wait_for(progress_event, 10, 0.05, "a progress event")
    assert event["verb"] == "Test.writes" and event["objects"] == status["objects"]
    (tmp / "go").touch()
    done = finished(manager, task_id)
    assert done["taskResult"] == "success"
    assert (done["progress"]["bytesDone"], done["progress"]["bytesTotal"]) == (2 * MIB, 2 * MIB)
    # the final count is in the task's record on disk too
    record = json.loads((tmp / "tasks" / f"{task_id}.json").read_text())
    assert record["progress"]["bytesDone"] == 2 * MIB
    final = runtime.events.of(f"|jobs|status|{task_id}")[-1]
    assert final["taskState"] == "finished" and final["progress"]["bytesDone"] == 2 * MIB


@pytest.mark.timeout(60)
def test_the_progress_tick_runs_only_while_tasks_run(tmp: Path, runtime: Runtime) -> None:
    """An idle manager has no timer waking it every second; a submission starts the tick
    (the byte progress above relies on it) and a tick that finds no task left stops it."""
    manager = start(runtime, tmp / "tasks")
    assert manager.describe().get(timeout=5)["progressTicks"] is False
    task_id = manager.submit("Test.files", {"dir": str(tmp), "sleep_at": 1}).get(timeout=5)
    assert manager.describe().get(timeout=5)["progressTicks"] is True
    assert manager.stop_task(task_id).get(timeout=5) is True
    finished(manager, task_id)
    wait_for(lambda: not manager.describe().get(timeout=5)["progressTicks"], 30, 0.05,
             "the progress tick stopped")
    again = manager.submit("Test.files", {"dir": str(tmp)}).get(timeout=5)
    assert finished(manager, again)["taskResult"] == "success"
