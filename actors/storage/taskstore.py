"""Task records and their persistence: one JSON file per task under ``<state>/storage/tasks``.

A record holds what is needed to report the task (state, result, code, message) and to undo
it after a restart: its verb, its params and how far its steps got (:class:`Progress`,
written before each step starts and after it ends). The store is a thread-safe map whose
every change is written atomically before it is visible, so what a client has been told is
what a restarted vdsmd finds; a change the state filesystem refuses (full, read-only) raises
a storage error and is not made.

States (vdsm's names): ``queued`` -> ``running`` -> ``finished``; ``aborting`` after
Task.stop; ``recovering`` while a revert runs. Results: ``success``, ``failure`` (the task
failed or was stopped; its started steps were undone), ``cleanSuccess`` / ``cleanFailure``
(the outcome of a revert: Task.revert, or the recovery of a task a restart interrupted).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.storage import fileutil
from actors.storage.bytecount import ByteCount
from actors.storage.sd.records import check_uuid
from actors.storage.state import json_files, read_json, write_json
from actors.storage.steps import Progress
from messaging.errors import NoSuchTask, StorageError

log = logging.getLogger(__name__)

_OBJECTS = ("spUUID", "sdUUID", "imgUUID", "volUUID")
_REQUEST_OBJECTS = {"sd_uuid": "sdUUID", "img_uuid": "imgUUID", "vol_uuid": "volUUID"}

QUEUED, RUNNING, ABORTING, RECOVERING, FINISHED = (
    "queued", "running", "aborting", "recovering", "finished")
UNFINISHED = (QUEUED, RUNNING, ABORTING, RECOVERING)
SUCCESS, FAILURE, CLEAN_SUCCESS, CLEAN_FAILURE = (
    "success", "failure", "cleanSuccess", "cleanFailure")


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    verb: str
    params: dict[str, Any]
    state: str = QUEUED
    result: str = ""
    code: int = 0
    message: str = ""
    progress: Progress = field(default_factory=lambda: Progress(0))
    undo_pending: int = 0
    """Steps started and not undone (a failed undo): what a revert still has to undo."""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    meter: ByteCount | None = field(default=None, compare=False, repr=False)
    """The running operation's byte count (memory only: not persisted)."""

    @property
    def finished(self) -> bool:
        return self.state == FINISHED

    def live_progress(self) -> Progress:
        """The journaled progress, with the bytes counted since the last journal entry."""
        if self.meter is None or not self.meter.expected or self.finished:
            return self.progress
        done, total = self.meter.snapshot()
        return replace(self.progress, bytes_done=done, bytes_total=total)

    def objects(self) -> dict[str, str]:
        """What the task works on: ``spUUID``, ``sdUUID``, ``imgUUID``, ``volUUID``."""
        found = {k: str(self.params[k]) for k in _OBJECTS if self.params.get(k)}
        request = self.params.get("request")
        if isinstance(request, dict):  # Volume.create
            for key, name in _REQUEST_OBJECTS.items():
                if request.get(key):
                    found.setdefault(name, str(request[key]))
        return found

    def to_wire(self) -> dict[str, Any]:
        return {"taskID": self.task_id, "taskState": self.state, "taskResult": self.result,
                "code": self.code, "message": self.message, "verb": self.verb,
                "objects": self.objects(), "progress": self.live_progress().to_json()}

    def event(self) -> dict[str, Any]:
        """The ``|jobs|status|<taskID>`` payload: the status, the verb and its objects."""
        return self.to_wire()

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "verb": self.verb, "params": self.params,
                "state": self.state, "result": self.result, "code": self.code,
                "message": self.message, "progress": self.progress.to_json(),
                "undo_pending": self.undo_pending, "created": self.created,
                "updated": self.updated}

    @classmethod
    def from_json(cls, data: Any) -> TaskRecord:
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            raise ValueError("a task record is a JSON object with params")
        return cls(task_id=check_uuid(data["task_id"], "task_id"), verb=str(data["verb"]),
                   params=data["params"], state=str(data["state"]),
                   result=str(data.get("result", "")), code=int(data.get("code", 0)),
                   message=str(data.get("message", "")),
                   progress=Progress.from_json(data["progress"]),
                   undo_pending=int(data.get("undo_pending", 0)),
                   created=float(data.get("created", 0)), updated=float(data.get("updated", 0)))


class TaskStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._records: dict[str, TaskRecord] = {}

    def _path(self, task_id: str) -> Path:
        return self.directory / f"{check_uuid(task_id, 'taskID')}.json"

    def load(self) -> list[TaskRecord]:
        """Read every record from disk (replacing what is in memory), oldest first."""
        found: dict[str, TaskRecord] = {}
        for path in json_files(self.directory):
            try:
                record = TaskRecord.from_json(read_json(path))
            except (KeyError, TypeError, ValueError) as e:
                log.error("ignoring the bad task record %s: %s", path, e)
                continue
            if record.task_id == path.stem:
                found[record.task_id] = record
        with self._lock:
            self._records = found
        return sorted(found.values(), key=lambda r: r.created)

    def _write(self, record: TaskRecord) -> None:
        """Persist ``record``; a storage error (NoSpace 211, else 200) when the state
        filesystem refuses it (full, read-only, gone): the change is then not made at all."""
        try:
            write_json(self._path(record.task_id), record.to_json())
        except OSError as e:
            raise StorageError(reason=f"cannot record task {record.task_id} in "
                               f"{self.directory}: {e.strerror or e}") from None

    def put(self, record: TaskRecord) -> TaskRecord:
        with self._lock:
            record = replace(record, updated=time.time())
            self._write(record)
            self._records[record.task_id] = record
            return record

    def update(self, task_id: str, **changes: Any) -> TaskRecord:
        with self._lock:
            current = self._records.get(task_id)
            if current is None:
                raise NoSuchTask(taskID=task_id)
            record = replace(current, updated=time.time(), **changes)
            self._write(record)
            self._records[task_id] = record
            return record

    def attach_meter(self, task_id: str, meter: ByteCount) -> None:
        """Show ``meter``'s live byte count in the task's status (in memory only)."""
        with self._lock:
            current = self._records.get(task_id)
            if current is not None:
                self._records[task_id] = replace(current, meter=meter)

    def get(self, task_id: str) -> TaskRecord:
        with self._lock:
            record = self._records.get(task_id)
        if record is None:
            raise NoSuchTask(taskID=task_id)
        return record

    def all(self) -> list[TaskRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.created)

    def remove(self, task_id: str) -> None:
        with self._lock:
            self._records.pop(task_id, None)
            if fileutil.remove(self._path(task_id)):
                fileutil.fsync_dir(self.directory)
