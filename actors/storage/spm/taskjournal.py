"""The SPM's task journals on the master domain: what a new SPM must finish or undo.

Each SPM task the writer runs has ``master/tasks/<taskID>.json`` in the master domain: its
verb, its params and how far it got (the steps started), rewritten (atomically, through the
guard) before each step begins. A finished task's journal is removed. What remains when an
SPM loses its lease or dies is exactly what a task left half done, and the next SPM's writer
reverts it (a deletion is finished instead) when it starts: ``recover``.

Only file-based master domains (file and loop) have a directory for this; on an LVM master the
journals are not kept (logged once) and an interrupted task's leftovers stay for the
management layer to delete, as its volumes are marked ILLEGAL until their last step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.storage import fileutil
from actors.storage.guard import WriteGuard
from actors.storage.locator import DomainLocator
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.records import check_uuid

log = logging.getLogger(__name__)

MAX_JOURNAL = 1 << 20


@dataclass(frozen=True)
class TaskEntry:
    task_id: str
    verb: str
    params: Mapping[str, Any]
    started: int = 0
    undo_pending: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"taskID": self.task_id, "verb": self.verb, "params": dict(self.params),
                "started": self.started, "undoPending": self.undo_pending}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskEntry:
        return cls(check_uuid(data["taskID"], "taskID"), str(data["verb"]),
                   dict(data["params"]), int(data.get("started", 0)),
                   int(data.get("undoPending", 0)))


class MasterTasks:
    def __init__(self, locator: DomainLocator, master_sd: str, guard: WriteGuard) -> None:
        self.locator = locator
        self.master_sd = master_sd
        self.guard = guard

    def _dir(self) -> Path | None:
        backend = self.locator.open(self.master_sd)
        if not isinstance(backend, FileDomain):
            return None
        return backend.layout.root / "master" / "tasks"

    def put(self, entry: TaskEntry) -> None:
        directory = self._dir()
        if directory is None:
            return
        with self.guard.write(f"task journal {entry.task_id}"):
            directory.mkdir(parents=True, exist_ok=True)
            fileutil.write_atomic(directory / f"{entry.task_id}.json",
                                  json.dumps(entry.to_json()).encode())

    def remove(self, task_id: str) -> None:
        directory = self._dir()
        if directory is None:
            return
        with self.guard.write(f"task journal {task_id} done"):
            fileutil.remove(directory / f"{check_uuid(task_id, 'taskID')}.json")

    def pending(self) -> list[TaskEntry]:
        directory = self._dir()
        if directory is None or not directory.is_dir():
            return []
        entries = []
        for path in sorted(directory.glob("*.json")):
            try:
                data = path.read_bytes()[:MAX_JOURNAL]
                entries.append(TaskEntry.from_json(json.loads(data)))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("unusable task journal %s: %s", path, e)
        return entries
