"""The task manager's view of SPM work: tasks that run in the SPM's writer process.

vdsmd's :class:`~actors.storage.tasks.TaskManager` keeps the records clients ask about; the
work of every SPM task (volume creation and deletion, attach, detach) runs in the writer,
which journals it on the master domain. :class:`WriterWork` is the bridge: its ``run`` asks
the writer to run the task and waits (on the task manager's worker thread), its ``revert``
asks the writer to undo, and a ``Task.stop`` reaches the writer as ``Writer.abortTask``. When
the lease is lost while it waits, the call ends with NotSPM: the task failed here, and the
next SPM's writer finishes or undoes it from its journal.

``StoragePool.spmStart`` is a task too (vdsm's semantics): :class:`SpmStartWork` asks the
lease actor to contend and waits on the lease board for the outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from actors.storage.command import Aborter
from actors.storage.spm.board import LeaseBoard
from actors.storage.spm.wire import TASK_TIMEOUT
from actors.storage.spm.writerclient import WriterClient
from actors.storage.steps import Journal, Progress
from messaging.errors import LeaseError, NotSPM, TaskAborted, VdsmError

SPM_VERBS = ("Volume.create", "Volume.delete", "Image.delete", "StorageDomain.attach",
             "StorageDomain.detach")

PROGRESS_POLL = 0.2
ClientFor = Callable[[str], WriterClient]
PoolChanged = Callable[[str, dict[str, Any]], None]
"""``(spUUID, pool record)``: an SPM task changed the pool (attach, detach); tell its actor."""


class WriterWork:
    """``params`` carry the task's id (``taskID``): the pool puts it there when it hands the
    task over, so the writer's journal and vdsmd's record name the same task."""

    def __init__(self, client_for: ClientFor, verb: str, params: Mapping[str, Any],
                 pool_changed: PoolChanged | None = None) -> None:
        self.client_for = client_for
        self.pool_changed = pool_changed
        self.verb = verb
        self.params = dict(params)
        self.task_id = str(params["taskID"])

    def _client(self) -> WriterClient:
        return self.client_for(str(self.params["spUUID"]))

    def run(self, abort: Aborter, journal: Journal) -> None:
        abort.check()
        client = self._client()
        journal(Progress(1, 1, 0, "running on the SPM's writer"))
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(abort, client, stop, journal),
                                   name=f"abort-watch-{self.task_id[:8]}", daemon=True)
        watcher.start()
        try:
            result = client.call("Writer.runTask", {"taskID": self.task_id, "verb": self.verb,
                                                    "params": self.params}, timeout=TASK_TIMEOUT)
        except TaskAborted:
            raise
        except VdsmError as e:
            if abort.aborted:
                raise TaskAborted(taskID=self.task_id, reason=e.message) from e
            raise
        finally:
            stop.set()
        if isinstance(result, dict):
            if result.get("bytesTotal"):
                abort.bytes.mirror(int(result["bytesDone"]), int(result["bytesTotal"]))
            if self.pool_changed is not None and "pool" in result:
                self.pool_changed(str(self.params["spUUID"]), result["pool"])
        journal(Progress(1, 1, 1, "done"))

    def _watch(self, abort: Aborter, client: WriterClient, stop: threading.Event,
               journal: Journal) -> None:
        """While the task runs: relay its steps' progress into the local record, and a
        Task.stop to the writer."""
        seen: dict[str, Any] | None = None
        aborted = False
        while not stop.wait(PROGRESS_POLL):
            if abort.aborted and not aborted:
                aborted = True
                try:
                    client.call("Writer.abortTask", {"taskID": self.task_id}, timeout=10.0)
                except VdsmError:
                    pass  # it ended meanwhile, or the lease is gone (then the task fails)
            try:
                progress = client.call("Writer.taskProgress", {"taskID": self.task_id},
                                       timeout=5.0)
            except VdsmError:
                continue  # the call itself reports what matters
            if progress and progress != seen and not stop.is_set():
                if "bytesTotal" in progress:
                    abort.bytes.mirror(int(progress["bytesDone"]), int(progress["bytesTotal"]))
                steps = {k: v for k, v in progress.items() if not k.startswith("bytes")}
                if seen is None or steps != {k: v for k, v in seen.items()
                                             if not k.startswith("bytes")}:
                    journal(Progress.from_json(steps))
                seen = progress

    def revert(self, started: int) -> None:
        if started <= 0:
            return
        self._client().call("Writer.revertTask", {
            "taskID": self.task_id, "verb": self.verb, "params": self.params,
            "started": started}, timeout=TASK_TIMEOUT)


class SpmStartWork:
    """Contend for the SPM role and wait until this host holds it (or is refused)."""

    def __init__(self, *, board: LeaseBoard, sp_uuid: str, contend: Callable[[], None],
                 timeout: float) -> None:
        self.board = board
        self.sp_uuid = sp_uuid
        self.contend = contend
        self.timeout = timeout

    def run(self, abort: Aborter, journal: Journal) -> None:
        journal(Progress(1, 1, 0, "contending"))
        if self.board.get(self.sp_uuid).may_write():
            journal(Progress(1, 1, 1, "SPM"))
            return
        asked = self.board.get(self.sp_uuid).attempts
        self.contend()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            abort.check()
            state = self.board.get(self.sp_uuid)
            if state.may_write():
                journal(Progress(1, 1, 1, "SPM"))
                return
            if state.attempts > asked and state.status == "Free":
                raise LeaseError(lease=f"SPM of pool {self.sp_uuid}", reason=state.reason)
            if state.status == "Unknown" and state.reason:  # the keeper cannot run
                raise LeaseError(lease=f"SPM of pool {self.sp_uuid}", reason=state.reason)
            time.sleep(0.05)
        raise LeaseError(lease=f"SPM of pool {self.sp_uuid}",
                         reason=f"not acquired within {self.timeout:g} s")

    def revert(self, started: int) -> None:
        """Nothing to undo: a failed contention leaves no trace."""


def not_spm(sp_uuid: str, reason: str) -> NotSPM:
    return NotSPM(spUUID=sp_uuid, data={"reason": reason})


def writer_builders(client_for: ClientFor, pool_changed: PoolChanged,
                    ) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    """The task kinds vdsmd runs through the SPM's writer."""

    def builder(verb: str) -> Callable[[Mapping[str, Any]], Any]:
        return lambda params: WriterWork(client_for, verb, params, pool_changed)

    return {verb: builder(verb) for verb in SPM_VERBS}
