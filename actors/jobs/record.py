"""A job's record: what it is, where it is, how it ended.

Statuses (vdsm's job statuses): ``pending`` (accepted, waiting: in a queue, or being
prepared) -> ``running`` -> ``done`` | ``failed`` | ``aborted``; ``aborting`` after a cancel
was asked. The ``|jobs|status|<jobID>`` event carries the storage tasks' members too
(``taskID``, ``taskState``: queued/running/aborting/finished, ``taskResult``: ''/success/
failure, ``code``, ``message``), so a subscriber reads both kinds of long operation alike.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

PENDING, RUNNING, ABORTING, DONE, FAILED, ABORTED = (
    "pending", "running", "aborting", "done", "failed", "aborted")
ENDED = frozenset({DONE, FAILED, ABORTED})
STATUSES = (PENDING, RUNNING, ABORTING, DONE, FAILED, ABORTED)
#: the kinds of job: an outgoing and an incoming migration, a hibernation, a restore
MIGRATE_OUT, MIGRATE_IN, HIBERNATE, RESTORE = "migrate_out", "migrate_in", "hibernate", \
    "restore"
TYPES = (MIGRATE_OUT, MIGRATE_IN, HIBERNATE, RESTORE)

#: the verb that starts each kind of job
VERBS = {MIGRATE_OUT: "VM.migrate", MIGRATE_IN: "VM.migrationCreate",
         HIBERNATE: "VM.hibernate", RESTORE: "VM.create"}
#: a job's progress in bytes (details of a hibernation or a restore), in its events too
BYTES = ("bytesDone", "bytesTotal")

_TASK_STATE = {PENDING: "queued", RUNNING: "running", ABORTING: "aborting", DONE: "finished",
               FAILED: "finished", ABORTED: "finished"}
_TASK_RESULT = {DONE: "success", FAILED: "failure", ABORTED: "failure"}


@dataclass(frozen=True)
class Job:
    job_id: str
    job_type: str
    vm_id: str
    status: str = PENDING
    progress: int = 0  # percent
    code: int = 0  # of the error that ended it (0: none)
    message: str = ""  # what it is doing, or why it ended
    details: dict[str, Any] = field(default_factory=dict)  # by kind (dst, downtime, ...)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    ended: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in ENDED

    def with_changes(self, **changes: Any) -> Job:
        now = time.time()
        job = replace(self, updated=now, **changes)
        if job.finished and job.ended is None:
            job = replace(job, ended=now)
        return job

    def to_wire(self) -> dict[str, Any]:
        """One entry of ``Host.getJobs``."""
        out: dict[str, Any] = {
            "id": self.job_id, "job_type": self.job_type, "vmID": self.vm_id,
            "status": self.status, "progress": self.progress, "description": self.message,
            "startTime": self.created, **self.details,
        }
        if self.ended is not None:
            out["endTime"] = self.ended
        if self.status in (FAILED, ABORTED):
            out["error"] = {"code": self.code, "message": self.message}
        return out

    def event(self) -> dict[str, Any]:
        """The ``|jobs|status|<jobID>`` payload (the storage tasks' members, and ours)."""
        return {
            "taskID": self.job_id, "taskState": _TASK_STATE[self.status],
            "taskResult": _TASK_RESULT.get(self.status, ""), "code": self.code,
            "message": self.message, "jobID": self.job_id, "job_type": self.job_type,
            "vmID": self.vm_id, "status": self.status, "progress": self.progress,
            # as a storage task's event: the verb that started it and what it acts on
            "verb": VERBS[self.job_type], "objects": {"vmID": self.vm_id},
            **{k: v for k, v in self.details.items() if k in BYTES},
        }

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "job_type": self.job_type, "vm_id": self.vm_id,
                "status": self.status, "progress": self.progress, "code": self.code,
                "message": self.message, "details": self.details, "created": self.created,
                "updated": self.updated, "ended": self.ended}

    @classmethod
    def from_json(cls, data: Any) -> Job:
        if not isinstance(data, dict) or not isinstance(data.get("details", {}), dict):
            raise ValueError("a job record is a JSON object")
        job_type, status = str(data["job_type"]), str(data["status"])
        if job_type not in TYPES or status not in STATUSES:
            raise ValueError(f"unknown job type {job_type!r} or status {status!r}")
        ended = data.get("ended")
        return cls(job_id=str(uuid.UUID(data["job_id"])), job_type=job_type,
                   vm_id=str(uuid.UUID(data["vm_id"])), status=status,
                   progress=int(data.get("progress", 0)), code=int(data.get("code", 0)),
                   message=str(data.get("message", "")), details=dict(data.get("details", {})),
                   created=float(data.get("created", 0)), updated=float(data.get("updated", 0)),
                   ended=None if ended is None else float(ended))
